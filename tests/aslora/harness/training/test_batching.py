"""Batch orders (aslora/harness/training/batching.py): deterministic permutations, length grouping that pads
less, and an evaluation order that changes no metric."""

import random

import pytest
import torch

from aslora.harness.inputs.data import TaskData, get_task
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.training.batching import (
    MEGABATCH_FACTOR,
    EpochShuffle,
    LengthGroupedShuffle,
    LengthOrder,
    evaluation_loader,
    lengths_of,
)
from aslora.harness.training.scoring import evaluate
from tests.conftest import VOCAB, tiny_bert

_LENGTH_RNG = random.Random(0)
LENGTHS = [_LENGTH_RNG.randint(3, 64) for _ in range(1000)]


def _padded_tokens(order, batch_size):
    return sum(
        max(LENGTHS[i] for i in order[s : s + batch_size]) * len(order[s : s + batch_size])
        for s in range(0, len(order), batch_size)
    )


def test_length_grouped_shuffle_is_a_seeded_permutation_sorted_within_each_megabatch():
    order = list(LengthGroupedShuffle(LENGTHS, 4, seed=1, epoch=1))
    assert sorted(order) == list(range(len(LENGTHS)))
    assert order == list(LengthGroupedShuffle(LENGTHS, 4, seed=1, epoch=1))  # any process, any restart
    assert order != list(LengthGroupedShuffle(LENGTHS, 4, seed=1, epoch=2))
    assert order != list(LengthGroupedShuffle(LENGTHS, 4, seed=2, epoch=1))
    size = 4 * MEGABATCH_FACTOR
    for start in range(0, len(order), size):
        chunk = [LENGTHS[i] for i in order[start : start + size]]
        assert chunk == sorted(chunk, reverse=True)
        # the same examples as the plain shuffle's mega-batch: grouping reorders, never redraws
        shuffled = list(EpochShuffle(len(LENGTHS), 1, 1))[start : start + size]
        assert sorted(order[start : start + size]) == sorted(shuffled)


def test_length_grouping_pads_less_than_shuffling():
    grouped = _padded_tokens(list(LengthGroupedShuffle(LENGTHS, 16, seed=3, epoch=1)), 16)
    shuffled = _padded_tokens(list(EpochShuffle(len(LENGTHS), 3, 1)), 16)
    assert grouped < 0.75 * shuffled


def test_length_order_is_longest_first_and_complete():
    order = list(LengthOrder([3, 9, 9, 1, 5]))
    assert order == [1, 2, 4, 0, 3]


def test_length_grouped_shuffle_rejects_a_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size=0"):
        LengthGroupedShuffle(LENGTHS, 0, seed=1, epoch=1)


def test_group_by_length_must_be_a_boolean():
    with pytest.raises(ValueError, match="train.group_by_length='yes'"):
        TrainSettings(lr=1e-3, epochs=1, batch_size=8, group_by_length="yes")


def _pad(features):
    """Dynamic padding, as DataCollatorWithPadding does: zeros, masked."""
    width = max(len(f["input_ids"]) for f in features)
    ids = torch.zeros(len(features), width, dtype=torch.long)
    mask = torch.zeros(len(features), width, dtype=torch.long)
    for row, f in enumerate(features):
        ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
        mask[row, : len(f["input_ids"])] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([f["label"] for f in features])}


def test_evaluation_in_length_order_gives_the_metrics_of_dataset_order():
    """The order changes the padding only: every prediction stays paired with its label."""
    from accelerate import Accelerator
    from datasets import Dataset

    torch.manual_seed(0)
    model = tiny_bert()
    generator = random.Random(1)
    lengths = [generator.randint(2, 30) for _ in range(70)]
    dataset = Dataset.from_dict(
        {
            "input_ids": [[generator.randint(2, VOCAB - 1) for _ in range(n)] for n in lengths],
            "label": [generator.randint(0, 1) for _ in lengths],
        }
    )
    data = TaskData(spec=get_task("rt_polarity"), train=dataset, validation=dataset, test=None)
    accelerator = Accelerator(cpu=True)
    loader = evaluation_loader(dataset, 16, _pad)
    assert list(loader.sampler)[0] == lengths.index(max(lengths))
    in_order = evaluate(model, torch.utils.data.DataLoader(dataset, batch_size=16, collate_fn=_pad), data, accelerator)
    by_length = evaluate(model, loader, data, accelerator)
    loss = by_length.pop("loss"), in_order.pop("loss")
    assert by_length == in_order
    assert loss[0] == pytest.approx(loss[1], rel=1e-6)  # the same cross-entropy, up to padding's float rounding
    assert 0 < in_order["accuracy"] < 1  # a metric that depends on the pairing


@pytest.mark.parametrize("group_by_length", [False, True])
def test_fit_draws_its_batches_from_the_chosen_order(group_by_length):
    """The loop's wiring: with grouping, each training batch holds examples of similar length."""
    from datasets import Dataset

    import aslora
    from aslora.harness.training.loop import fit

    generator = random.Random(2)
    lengths = [generator.randint(2, 40) for _ in range(96)]
    dataset = Dataset.from_dict(
        {
            "input_ids": [[generator.randint(2, VOCAB - 1) for _ in range(n)] for n in lengths],
            "label": [generator.randint(0, 1) for _ in lengths],
        }
    )
    data = TaskData(spec=get_task("rt_polarity"), train=dataset, validation=dataset.select(range(8)), test=None)
    seen = []

    def collate(features):
        seen.append([len(f["input_ids"]) for f in features])
        return _pad(features)

    torch.manual_seed(0)
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=2, target_modules=["query", "value"]))
    fit(
        model,
        data,
        collate,
        TrainSettings(lr=1e-3, epochs=1, batch_size=8, progress_bar=False, group_by_length=group_by_length),
    )
    train_batches = [b for b in seen if len(b) == 8][:12]  # the 12 training batches come first
    spread = sum(max(b) - min(b) for b in train_batches) / len(train_batches)
    assert (spread < 8) == group_by_length, spread


def test_lengths_are_read_from_any_map_style_dataset():
    rows = [{"input_ids": [1] * n, "label": 0} for n in (4, 9, 2)]
    assert lengths_of(rows) == [4, 9, 2]
    from datasets import Dataset

    assert lengths_of(Dataset.from_list(rows)) == [4, 9, 2]
