"""Kept test predictions (``train.test_each_epoch``) as text: one character per test example, in the
dataset's order, so two runs of a task pair example by example and a report stays small.

The loop scores test longest-first (``batching.LengthOrder``); :func:`encode_classes` puts each
prediction back at its example's index. Class ids 0–35 map to ``0-9a-z``; more classes are refused.
"""

from __future__ import annotations

_CLASS_CHARS = "0123456789abcdefghijklmnopqrstuvwxyz"


def encode_classes(predictions: list[int], order: list[int]) -> str:
    """Class ids in evaluation order → one character per example in dataset order."""
    if len(predictions) != len(order):
        raise RuntimeError(f"{len(predictions)} test predictions for {len(order)} test examples")
    if predictions and max(predictions) >= len(_CLASS_CHARS):
        raise ValueError(f"class id {max(predictions)}: kept predictions encode at most {len(_CLASS_CHARS)} classes")
    out = [""] * len(order)
    for index, cls in zip(order, predictions, strict=True):
        out[index] = _CLASS_CHARS[cls]
    return "".join(out)


def decode_classes(text: str) -> list[int]:
    """The inverse of the encoding kept in ``FitResult.test_predictions``."""
    return [_CLASS_CHARS.index(c) for c in text]
