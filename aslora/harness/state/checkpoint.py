"""Atomic, self-verifying training checkpoints for an exact continuation — loaded without pickle.

Layout: ``<run_dir>/checkpoints/step-000120/`` holding

* ``state.json`` + ``state.safetensors`` — trainable parameters (adapter and head), the ASLoRA
  pool's buffers (layer→B map, running means and their count, merge history), the best epoch's
  weights, optimizer and scheduler state, the data position (epoch, batches done in it), the record
  so far, and the fingerprint of the run's configuration;
* ``rng-rank<k>.json`` + ``rng-rank<k>.safetensors`` — Python, NumPy, torch and CUDA generator
  states of process ``k``;
* ``manifest.json`` — written **last**, with the SHA-256 of every other file.

Every file is JSON or safetensors (``aslora/harness/state/safe_state.py``): resuming parses data and
runs nothing, so a checkpoint folder someone else could write to cannot run code as the user who
resumes from it. Checkpoints of the older pickled format (``state.pt``) are refused unless
``checkpoint.allow_pickle=true`` says they are one's own.

A checkpoint is built in a temporary directory on the same filesystem, every file fsynced, the
manifest written, then the directory renamed into place and its parent fsynced: a crash at any
moment leaves either the whole checkpoint or none. On resume, a checkpoint whose manifest is
missing or whose files do not match their hashes is skipped with a warning, and the previous one
is used. (HF Trainer's checkpoints are not atomic; Lightning saves no RNG state; torchtune
checkpoints only at epoch ends.)
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import random
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aslora.harness.state import safe_state
from aslora.json_file import read_json

log = logging.getLogger("aslora")

MANIFEST = "manifest.json"
STATE = "state"  # state.json + state.safetensors
LEGACY_STATE = "state.pt"  # the pickled format of earlier versions
PREFIX = "step-"


@dataclass(frozen=True)
class CheckpointSettings:
    every_steps: int | None = None
    """Write a checkpoint every this many optimizer steps (``None``: never)."""
    keep_last: int = 2
    """How many of the newest checkpoints to keep."""
    allow_pickle: bool = False
    """Resume from a checkpoint of the older pickled format (``state.pt``). Unpickling runs whatever
    the file names: set it only for checkpoints you wrote yourself."""

    def __post_init__(self) -> None:
        problems = []
        if self.every_steps is not None and (
            not isinstance(self.every_steps, int) or isinstance(self.every_steps, bool) or self.every_steps <= 0
        ):
            problems.append(f"checkpoint.every_steps={self.every_steps!r} must be a positive integer or null")
        if not isinstance(self.keep_last, int) or isinstance(self.keep_last, bool) or self.keep_last < 1:
            problems.append(f"checkpoint.keep_last={self.keep_last!r} must be an integer >= 1")
        if not isinstance(self.allow_pickle, bool):
            problems.append(f"checkpoint.allow_pickle={self.allow_pickle!r} must be true or false")
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
    _save_synced(rng_state(), tmp, f"rng-rank{rank}")


def commit(tmp: Path, directory: Path, step: int, state: dict[str, Any], keep_last: int) -> Path:
    """Write ``state`` and the manifest into ``tmp``, rename it to ``step-<step>``, prune old ones."""
    _save_synced(state, tmp, STATE)
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
    """Checkpoint directories (``step-<digits>``, not links), oldest first (by step); anything else
    in ``directory`` is skipped with a warning, never read or deleted."""
    if not directory.is_dir():
        return []
    found = []
    for p in directory.iterdir():
        if p.name.startswith(".tmp-"):
            continue  # a write in progress or left by a crash: begin() replaces it
        if p.is_dir() and not p.is_symlink() and re.fullmatch(rf"{PREFIX}\d{{1,12}}", p.name):
            found.append(p)
        else:
            log.warning("skipping %r in %r: not a checkpoint this code writes", p.name, str(directory))
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_valid(directory: Path) -> Path | None:
    """The newest checkpoint whose manifest exists and whose files match it; warns for each skipped."""
    for candidate in reversed(list_checkpoints(directory)):
        problem = _verify(candidate)
        if problem is None:
            return candidate
        log.warning("skipping checkpoint %r: %s", str(candidate), problem)
    return None


def load_state(checkpoint: Path, allow_pickle: bool = False) -> dict[str, Any]:
    """The training state of ``checkpoint``, parsed from JSON and safetensors (no pickle).

    Raises:
        ValueError: a pickled checkpoint of the older format without ``allow_pickle``, or a file
            that is not what it should be — naming the file.
    """
    if (checkpoint / LEGACY_STATE).is_file():
        return _load_legacy(checkpoint / LEGACY_STATE, allow_pickle)
    state = safe_state.load(checkpoint / f"{STATE}.json", checkpoint / f"{STATE}.safetensors")
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(f"{checkpoint / (STATE + '.json')} lacks {missing}: not a checkpoint of this version")
    return state


def load_rng(checkpoint: Path, rank: int, allow_pickle: bool = False) -> dict[str, Any]:
    if (checkpoint / f"rng-rank{rank}.pt").is_file():
        return _load_legacy(checkpoint / f"rng-rank{rank}.pt", allow_pickle)
    path = checkpoint / f"rng-rank{rank}.json"
    if not path.is_file():
        raise ValueError(
            f"checkpoint {checkpoint} has no RNG state for process {rank}: "
            f"resume with the number of processes it was written with"
        )
    state = safe_state.load(path, checkpoint / f"rng-rank{rank}.safetensors")
    if not isinstance(state, dict) or set(state) != {"python", "numpy", "torch", "cuda"}:
        raise ValueError(f"{path} does not hold the four RNG states (python, numpy, torch, cuda)")
    problem = _rng_problem(state)
    if problem:
        raise ValueError(f"{path}: {problem}")
    return state


def _rng_problem(state: dict[str, Any]) -> str | None:
    """What is wrong with an RNG state read from a file (``None``: each generator would take it):
    the shapes ``random.getstate()``, ``np.random.get_state()`` and ``torch.get_rng_state()`` give."""
    python = state["python"]
    if not (
        isinstance(python, tuple)
        and len(python) == 3
        and python[0] == 3
        and isinstance(python[1], tuple)
        and len(python[1]) == 625
        and all(isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**32 for x in python[1])
        and (python[2] is None or isinstance(python[2], float))
    ):
        return "python: not the state random.getstate() gives (3, 625 words, gauss)"
    numpy = state["numpy"]
    if not (
        isinstance(numpy, tuple)
        and len(numpy) == 5
        and numpy[0] == "MT19937"
        and isinstance(numpy[1], np.ndarray)
        and numpy[1].dtype == np.uint32
        and numpy[1].shape == (624,)
        and isinstance(numpy[2], int)
        and 0 <= numpy[2] <= 624
        and numpy[3] in (0, 1)
        and isinstance(numpy[4], float)
    ):
        return "numpy: not the state np.random.get_state() gives (MT19937, 624 words, position, gauss)"
    expected = torch.get_rng_state()
    if not (
        torch.is_tensor(state["torch"])
        and state["torch"].dtype == torch.uint8
        and state["torch"].shape == expected.shape
    ):
        return f"torch: not a generator state (uint8, {tuple(expected.shape)})"
    cuda = state["cuda"]
    if cuda is not None and not (
        isinstance(cuda, list) and all(torch.is_tensor(t) and t.dtype == torch.uint8 and t.dim() == 1 for t in cuda)
    ):
        return "cuda: not a list of generator states"
    return None


def check_resumable(directory: Path, fingerprint: str | None, allow_pickle: bool = False) -> Path | None:
    """Before any weights load: the checkpoint a resume would use (``None``: none, start afresh),
    refusing a pickled one without ``allow_pickle`` and one written by a run of another configuration.

    Raises:
        ValueError: naming the checkpoint and what to do.
    """
    checkpoint = latest_valid(directory)
    if checkpoint is None:
        return None
    if not allow_pickle:  # any pickled file a resume would read: refused here, before the run writes anything
        for pickled in (checkpoint / LEGACY_STATE, *sorted(checkpoint.glob("rng-rank*.pt"))):
            if pickled.is_file():
                _load_legacy(pickled, allow_pickle)  # raises, saying what to do
    if (checkpoint / LEGACY_STATE).is_file():
        return checkpoint
    written_by = read_json(checkpoint / f"{STATE}.json", "a checkpoint state", expect=dict).get("fingerprint")
    if fingerprint is not None and written_by != fingerprint:
        raise ValueError(
            f"checkpoint {checkpoint} was written by a run with another configuration (model, task, "
            f"adapter, training settings or seed differ): resuming it would mix two runs. Resume "
            f"with the configuration it was written with, or start afresh with resume=false"
        )
    return checkpoint


STATE_KEYS = ("step", "epoch", "batches_done", "epoch_losses", "model", "optimizer", "scheduler", "result")


def _load_legacy(path: Path, allow_pickle: bool) -> dict[str, Any]:
    if not allow_pickle:
        raise ValueError(
            f"{path} is a checkpoint of the older pickled format: loading it would unpickle, which runs whatever "
            f"the file names, so it is refused. Start the run afresh (resume=false; its finished epochs are in "
            f"report.json and metrics.csv), or, for a checkpoint you wrote yourself, set checkpoint.allow_pickle=true"
        )
    log.warning("loading %s with pickle (checkpoint.allow_pickle=true)", path)
    with torch.serialization.safe_globals(_LEGACY_GLOBALS):  # the restricted unpickler, widened to NumPy's RNG state
        return torch.load(path, map_location="cpu", weights_only=True)


def _numpy_reconstructors() -> list:
    """NumPy's array-rebuilding function under the module names NumPy 1 and NumPy 2 pickle it as."""

    found = []
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            found.append(importlib.import_module(module)._reconstruct)
        except (ImportError, AttributeError):
            pass
    return found


_LEGACY_GLOBALS = [np.ndarray, np.dtype, np.dtypes.UInt32DType, *_numpy_reconstructors()]


def discard(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def _verify(checkpoint: Path) -> str | None:
    manifest_path = checkpoint / MANIFEST
    if not manifest_path.is_file():
        return "no manifest (written last, so the checkpoint is incomplete)"
    try:
        manifest = read_json(manifest_path, "a manifest")
    except ValueError as error:  # unreadable, not UTF-8, not JSON, too deep: this checkpoint is skipped
        return f"unreadable manifest ({error})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return "the manifest is not a mapping with a non-empty 'files' mapping"
    if not isinstance(manifest.get("step"), int) or f"{PREFIX}{manifest['step']:09d}" != checkpoint.name:
        return f"the manifest's step {manifest.get('step')!r} is not the folder's"
    for name, digest in files.items():
        # names are plain file names in this folder: no separator, no '..', nothing hidden or odd
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,99}", name) or ".." in name:
            return f"the manifest names a file outside the checkpoint or oddly named: {name!r}"
        if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
            return f"the manifest's SHA-256 of {name!r} is not one"
        path = checkpoint / name
        if path.is_symlink() or not path.is_file():
            return f"{name!r} is missing (or a link)"
        if _sha256(path) != digest:
            return f"{name!r} does not match its SHA-256 in the manifest (truncated or corrupted)"
    return None


def _save_synced(state: Any, directory: Path, stem: str) -> None:
    json_path, tensors_path = directory / f"{stem}.json", directory / f"{stem}.safetensors"
    safe_state.save(state, json_path, tensors_path)
    for path in (json_path, tensors_path):
        with open(path, "rb") as f:
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
