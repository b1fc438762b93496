"""What :func:`aslora.harness.training.loop.fit` takes besides the model and the data, and what it
returns: :class:`FitOptions` (checkpointing, resuming, fault injection), :class:`FitResult` (the
per-epoch record, the best epoch, the adapter behind it) and which of the result's fields a
checkpoint carries, so a resumed run reports what an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aslora.harness.state.resume_check import ResumePoint


class NonFiniteError(RuntimeError):
    """A non-finite loss or gradient under ``nonfinite="error"`` (or too many under ``skip``)."""


@dataclass
class FitResult:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_validation: dict[str, float] = field(default_factory=dict)
    test_at_best: dict[str, float] | None = None
    total_steps: int = 0
    params_before: dict[str, Any] = field(default_factory=dict)
    params_after: dict[str, Any] = field(default_factory=dict)
    merge_history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0
    skipped_steps: int = 0
    resumed_from_step: int | None = None
    num_processes: int = 1
    is_main_process: bool = True
    final_state: dict[str, Any] | None = None
    """Under FSDP: the trained tensors gathered in full (trainable parameters and the pool)."""
    best_state: dict[str, Any] | None = None
    """The trained tensors (trainable parameters and the pool, on CPU) as they were at the end of
    ``best_epoch``: the adapter behind the reported scores. ``None`` for full fine-tuning."""
    params_at_best: dict[str, Any] | None = None
    """``count_parameters`` at the end of ``best_epoch`` (an ASLoRA run may tie again after it)."""
    test_labels: str | None = None
    """Under ``train.test_each_epoch``: the test labels, encoded as ``test_predictions`` are."""
    test_predictions: dict[str, str] = field(default_factory=dict)
    """Under ``train.test_each_epoch``: epoch (as text) → the predicted class of every test example,
    in the dataset's order, one character each (``"0110…"``; classes above 9 as letters)."""


@dataclass(frozen=True)
class FitOptions:
    """Where and how often to checkpoint, whether to resume, and fault injection for tests."""

    checkpoint_dir: Path | None = None
    checkpoint_every_steps: int | None = None
    keep_last_checkpoints: int = 2
    resume: bool = False
    kill_after_step: int | None = None
    """Fault injection: SIGKILL this process right after this optimizer step (resume tests)."""
    allow_pickle: bool = False
    """Resume from a checkpoint of the older pickled format (one's own files only)."""
    fingerprint: str | None = None
    """The run configuration's fingerprint: written into each checkpoint, checked on resume."""
    resume_point: ResumePoint | None = None
    """Under ``resume``: the checkpoint the caller already read and checked (``run`` does, before it
    writes anything); ``None``: ``fit`` reads and checks it."""


# The result's fields a checkpoint saves and a resumed run restores (the rest are set at the end).
RESUMABLE_FIELDS = (
    "epochs",
    "best_epoch",
    "best_metric",
    "best_validation",
    "test_at_best",
    "skipped_steps",
    "train_seconds",
    "best_state",
    "params_at_best",
    "test_predictions",
)
