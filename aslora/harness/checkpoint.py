"""Atomic, self-verifying training checkpoints for an exact continuation.

Layout: ``<run_dir>/checkpoints/step-000120/`` holding

* ``state.pt`` — trainable parameters (adapter and head), the ASLoRA pool's buffers and extra
  state (layer→B map, running means and their count, merge history), optimizer and scheduler
  state, the data position (epoch, batches done in it), the record so far;
* ``rng-rank<k>.pt`` — Python, NumPy, torch and CUDA generator states of process ``k``;
* ``manifest.json`` — written **last**, with the SHA-256 of every other file.

A checkpoint is built in a temporary directory on the same filesystem, every file fsynced, the
manifest written, then the directory renamed into place and its parent fsynced: a crash at any
moment leaves either the whole checkpoint or none. On resume, a checkpoint whose manifest is
missing or whose files do not match their hashes is skipped with a warning, and the previous one
is used. (HF Trainer's checkpoints are not atomic; Lightning saves no RNG state; torchtune
checkpoints only at epoch ends.)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger("aslora")

MANIFEST = "manifest.json"
STATE = "state.pt"
PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointSettings:
    every_steps: int | None = None
    """Write a checkpoint every this many optimizer steps (``None``: never)."""
    keep_last: int = 2
    """How many of the newest checkpoints to keep."""

    def __post_init__(self) -> None:
        problems = []
        if self.every_steps is not None and (not isinstance(self.every_steps, int) or isinstance(self.every_steps, bool)
                                             or self.every_steps <= 0):
            problems.append(f"checkpoint.every_steps={self.every_steps!r} must be a positive integer or null")
        if not isinstance(self.keep_last, int) or isinstance(self.keep_last, bool) or self.keep_last < 1:
            problems.append(f"checkpoint.keep_last={self.keep_last!r} must be an integer >= 1")
        if problems:
            raise ValueError("; ".join(problems))


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def begin(directory: Path, step: int) -> Path:
    """A fresh temporary directory beside the checkpoints (same filesystem, so rename is atomic);
    its name depends only on the step, so every process of a run finds the same one."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".tmp-{PREFIX}{step:09d}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a crash mid-write: never a valid checkpoint
    tmp.mkdir()
    return tmp


def write_rng(tmp: Path, rank: int) -> None:
    _save_synced(rng_state(), tmp / f"rng-rank{rank}.pt")


def commit(tmp: Path, directory: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` and the manifest into ``tmp``, rename it to ``step-<step>``, prune old ones."""
    _save_synced(state, tmp / STATE)
    files = {p.name: _sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    manifest = {"step": step, "files": files}
    with open(tmp / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = directory / f"{PREFIX}{step:09d}"
    if final.exists():  # the same step written again (a resumed run): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    _fsync_dir(directory)
    for old in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoint directories, oldest first (by step)."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX)),
                  key=lambda p: int(p.name[len(PREFIX):]))


def latest_valid(directory: Path) -> Path | None:
    """The newest checkpoint whose manifest exists and whose files match it; warns for each skipped."""
    for candidate in reversed(list_checkpoints(directory)):
        problem = _verify(candidate)
        if problem is None:
            return candidate
        log.warning("skipping checkpoint %s: %s", candidate, problem)
    return None


def load_state(checkpoint: Path) -> dict[str, Any]:
    return torch.load(checkpoint / STATE, map_location="cpu", weights_only=False)


def load_rng(checkpoint: Path, rank: int) -> dict[str, Any]:
    path = checkpoint / f"rng-rank{rank}.pt"
    if not path.is_file():
        raise ValueError(f"checkpoint {checkpoint} has no RNG state for process {rank}: "
                         f"resume with the number of processes it was written with")
    return torch.load(path, map_location="cpu", weights_only=False)


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def _verify(checkpoint: Path) -> str | None:
    manifest_path = checkpoint / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (written last, so the checkpoint is incomplete)"
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        return f"unreadable manifest ({error})"
    for name, digest in files.items():
        path = checkpoint / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its SHA-256 in the manifest (truncated or corrupted)"
    return None


def _save_synced(obj: Any, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
