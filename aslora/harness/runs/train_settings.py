"""The training settings of one run (``train.*`` in the configs), checked when built.

Every value is validated in ``__post_init__`` and every problem is reported at once, so a bad
setting fails before any model loads (``RunSettings.from_dict`` collects them with the others).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NONFINITE_POLICIES = ("error", "skip")


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    eval_batch_size: int = 64
    weight_decay: float = 0.1
    """AdamW's decoupled weight decay; configs/train.yaml's value too (tests/test_configs.py holds them equal)."""
    warmup_ratio: float = 0.06
    max_grad_norm: float | None = 1.0
    head_lr: float | None = None
    """A separate learning rate for the task head (VeRA's recipe); ``None``: same as ``lr``."""
    shared_a_lr: float | None = None
    """A separate learning rate for the shared A factors of ASLoRA, ShareLoRA and Tied-LoRA (the
    pool's ``lora_A``); ``None``: same as ``lr``. The paper is silent on it. Why one might want it:
    a step on a shared A moves every layer that reads it at once, so A may tolerate a smaller step
    than the per-layer B's (the small-data suite measures it)."""
    seed: int = 0
    mixed_precision: str = "no"
    progress_bar: bool = True
    nonfinite: str = "error"
    """A NaN/Inf loss or gradient: ``error`` stops (the last checkpoint stays the last good one);
    ``skip`` drops that batch's update and counts it."""
    max_skipped_steps: int = 10
    """Under ``skip``: stop once more than this many updates were dropped."""
    compile: bool = False
    """``torch.compile`` the model (after ``accelerate.prepare``): merges never recompile it."""
    gradient_checkpointing: bool = False
    """Activation checkpointing of the base model's blocks (transformers' non-reentrant default)."""
    group_by_length: bool = False
    """Training batches of similar length (``batching.LengthGroupedShuffle``): less padding, other
    batches — a different run, so it joins the run name. Off by default."""
    test_each_epoch: bool = False
    """Score the test split after every epoch, not only where validation improves, and keep every
    epoch's per-example test predictions (classification). The best epoch is still chosen on
    validation alone; what this buys is the test score at an epoch another *validation* rule picks
    (the small-data plan's "best epoch at the adapter's final size"), and paired per-example analyses.
    Training is unchanged (evaluation draws no random numbers); it costs one test pass per epoch."""
    fsdp: bool = False
    """Shard with FSDP2 (``aslora.integrations.fsdp``) instead of replicating with DDP; needs
    several processes (torchrun / accelerate launch)."""

    def __post_init__(self) -> None:
        problems = []
        if not (_is_number(self.lr) and self.lr > 0):
            problems.append(f"train.lr={self.lr!r} must be a positive number")
        for name in ("head_lr", "shared_a_lr"):
            value = getattr(self, name)
            if value is not None and not (_is_number(value) and value > 0):
                problems.append(f"train.{name}={value!r} must be a positive number or null")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                problems.append(f"train.{name}={value!r} must be a positive integer")
        if not (_is_number(self.weight_decay) and self.weight_decay >= 0):
            problems.append(f"train.weight_decay={self.weight_decay!r} must be >= 0")
        if not (_is_number(self.warmup_ratio) and 0 <= self.warmup_ratio < 1):
            problems.append(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        if self.max_grad_norm is not None and not (_is_number(self.max_grad_norm) and self.max_grad_norm > 0):
            problems.append(f"train.max_grad_norm={self.max_grad_norm!r} must be positive or null")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            problems.append(f"train.mixed_precision={self.mixed_precision!r} must be one of ['no', 'bf16', 'fp16']")
        if self.nonfinite not in NONFINITE_POLICIES:
            problems.append(f"train.nonfinite={self.nonfinite!r} must be one of {list(NONFINITE_POLICIES)}")
        if not _is_int(self.max_skipped_steps) or self.max_skipped_steps < 0:
            problems.append(f"train.max_skipped_steps={self.max_skipped_steps!r} must be a non-negative integer")
        for name in ("progress_bar", "compile", "gradient_checkpointing", "group_by_length", "test_each_epoch", "fsdp"):
            if not isinstance(getattr(self, name), bool):
                problems.append(f"train.{name}={getattr(self, name)!r} must be true or false")
        if problems:
            raise ValueError("; ".join(problems))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
