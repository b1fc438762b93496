"""Which examples go into which batch, and in what order (the loop's samplers).

Three orders, each a pure function of its arguments so that every process and every restart sees
the same one:

- ``EpochShuffle``: a fresh permutation per ``(seed, epoch)`` — the training order.
- ``LengthGroupedShuffle``: the same permutation, cut into mega-batches of ``batch_size × 50``
  examples, each sorted by length (longest first), so a batch holds examples of similar length and
  dynamic padding pads little. Batches are still random across the epoch; *which* examples share a
  batch changes, so a run with it is a different run (``train.group_by_length`` joins the run
  name). HF ``Trainer``'s ``group_by_length`` does the same.
- ``LengthOrder``: the whole split sorted by length, longest first — for evaluation only, where
  the order cannot change a metric (every prediction is paired with its own label) and the first
  batch is the largest, so an out-of-memory error comes at once. Padded positions are masked, so a
  prediction differs from the unsorted pass by float rounding at most (measured:
  ``python -m scripts.bench.batching``).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

MEGABATCH_FACTOR = 50  # as in HF Trainer's LengthGroupedSampler: enough to group, still shuffled


def lengths_of(dataset) -> list[int]:
    """Token count of every example (its ``input_ids``), read once: a column read for a
    ``datasets.Dataset``, one example at a time for any other map-style dataset."""
    if hasattr(dataset, "column_names"):
        return [len(ids) for ids in dataset["input_ids"]]
    return [len(dataset[i]["input_ids"]) for i in range(len(dataset))]


def _permutation(size: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(size, generator=generator).tolist()


class EpochShuffle(torch.utils.data.Sampler):
    """A permutation that depends only on ``(seed, epoch)``: any process, any restart, same order."""

    def __init__(self, size: int, seed: int, epoch: int) -> None:
        self.size, self.seed, self.epoch = size, seed, epoch

    def __iter__(self) -> Iterator[int]:
        return iter(_permutation(self.size, self.seed, self.epoch))

    def __len__(self) -> int:
        return self.size


class LengthGroupedShuffle(torch.utils.data.Sampler):
    """``EpochShuffle``'s permutation, each mega-batch of ``batch_size × 50`` sorted longest first."""

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        self.lengths, self.batch_size, self.seed, self.epoch = list(lengths), batch_size, seed, epoch

    def __iter__(self) -> Iterator[int]:
        order = _permutation(len(self.lengths), self.seed, self.epoch)
        size = self.batch_size * MEGABATCH_FACTOR
        grouped = []
        for start in range(0, len(order), size):
            # stable sort: equal lengths keep their random order
            grouped += sorted(order[start : start + size], key=lambda i: -self.lengths[i])
        return iter(grouped)

    def __len__(self) -> int:
        return len(self.lengths)


class LengthOrder(torch.utils.data.Sampler):
    """Every example once, longest first (ties by index): the evaluation order."""

    def __init__(self, lengths: Sequence[int]) -> None:
        self.order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def evaluation_loader(dataset, batch_size: int, collate) -> torch.utils.data.DataLoader:
    """The loader every evaluation uses (the loop's and ``evaluate.py``'s, so they agree exactly)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        collate_fn=collate,
        sampler=LengthOrder(lengths_of(dataset)),
        generator=torch.Generator().manual_seed(0),
    )
