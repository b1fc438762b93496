"""Kept test predictions as text: back in the dataset's order, decoded to what was predicted."""

import random

import pytest

from aslora.harness.training.kept_predictions import decode_classes, encode_classes


def test_predictions_scored_in_any_order_come_back_in_the_datasets_order():
    rng = random.Random(0)
    truth = [rng.randrange(36) for _ in range(200)]  # every class the encoding allows, by dataset index
    order = list(range(200))
    rng.shuffle(order)  # the evaluation order (longest first in the loop): dataset indices
    scored = [truth[i] for i in order]
    text = encode_classes(scored, order)
    assert len(text) == 200
    assert decode_classes(text) == truth


def test_a_prediction_count_that_is_not_the_test_sets_is_refused():
    with pytest.raises(RuntimeError, match="3 test predictions for 4 test examples"):
        encode_classes([0, 1, 1], [0, 1, 2, 3])


def test_a_class_beyond_the_alphabet_is_refused_naming_it():
    with pytest.raises(ValueError, match="class id 36: kept predictions encode at most 36 classes"):
        encode_classes([0, 36], [0, 1])
