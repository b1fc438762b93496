"""One GPU per job when a grid runs several jobs at once on one machine (``hydra/launcher=parallel``).

The parallel launcher runs jobs in joblib worker processes, and a worker runs many jobs in turn. So
a job cannot simply be given GPU ``job_number % n``: two jobs that run at the same time can have the
same remainder. Instead each worker claims a free GPU the first time it runs a job — an exclusive
``flock`` on ``<tmp>/aslora-gpu-slots/gpu-<i>.lock``, which the kernel releases when the worker exits,
however it exits — sets ``CUDA_VISIBLE_DEVICES`` to it before CUDA starts in that process, and keeps
it for every later job. Two grids on one machine share the same slots. With ``n_jobs`` above the
number of GPUs a job finds no free GPU and stops, saying so. Nothing happens in the sequential
launcher (the jobs run in the launching process), on CPU, on one GPU, or under SLURM (submitit
gives each job its own GPUs).

And what a launcher needs before a grid starts (:func:`check_launcher`, which the grid preflight
runs first): its plugin installed, and for SLURM a partition and a machine that can submit.
"""

from __future__ import annotations

import fcntl
import importlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import IO, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

SLOTS = Path(tempfile.gettempdir()) / "aslora-gpu-slots"
_held: dict[str, IO] = {}  # this process's claimed slot: held open (and locked) until the process exits


def visible_gpus() -> list[str]:
    """The GPUs this process may use: ``CUDA_VISIBLE_DEVICES`` if set, else what ``nvidia-smi`` lists
    (asked without starting CUDA, which would pin the process before a slot is chosen), else none."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [gpu.strip() for gpu in listed.split(",") if gpu.strip()]
    try:
        answer = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=60
        )
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return []
    return answer.stdout.split() if answer.returncode == 0 else []


# Our launcher configs (configs/hydra/launcher/) and the plugin that provides each one's base config.
# (Without the plugin installed our config does not compose: Hydra itself stops, before anything is
# written, with "In 'hydra/launcher/parallel': Could not find 'hydra/launcher/joblib'".)


def plugin_package(target: str) -> str:
    """The pip package of a Hydra launcher plugin, read off its class path: Hydra's plugins live in
    ``hydra_plugins.<name>`` and ship as ``<name>`` with dashes (``hydra_plugins.hydra_joblib_launcher.…``
    is ``hydra-joblib-launcher``), so the launcher configs are the one list of launchers."""
    parts = target.split(".")
    if len(parts) > 2 and parts[0] == "hydra_plugins" and parts[1]:
        return parts[1].replace("_", "-")
    return "the package that provides it"


SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def check_launcher(launcher: DictConfig | dict, choice: str | None) -> list[str]:
    """What stops ``hydra/launcher=<choice>`` from launching here, one line per problem (none: it can):
    its launcher class does not import (a plugin not installed, or a config naming a launcher that is
    not there); under SLURM, no ``hydra.launcher.partition``, or no ``sbatch``/``srun`` here."""
    setting = f"hydra/launcher={choice}"
    target = str(launcher.get("_target_") or "")
    package = plugin_package(target)
    module, _, name = target.rpartition(".")
    try:
        if not hasattr(importlib.import_module(module), name):
            raise ImportError(f"{module} has no {name}")
    except (ImportError, ValueError) as error:
        return [f"{setting}: its launcher {target!r} does not import ({error}); pip install {package}"]
    problems = []
    if target == SLURM_TARGET:
        if not launcher.get("partition"):
            problems.append(
                f"{setting} needs hydra.launcher.partition=<your cluster's GPU partition> (`sinfo -s` lists them)"
            )
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            problems.append(
                f"{setting} submits with {' and '.join(missing)}, not found on this machine: run the grid on the "
                "cluster's login node (hydra/launcher=local_submitit runs the same code path here)"
            )
    return problems


def claim_gpu(gpus: list[str], slots: Path = SLOTS) -> str | None:
    """Lock the first free GPU of ``gpus`` for this process's lifetime and return it (the one already
    held, if this process has one); ``None`` if every one is held by another process."""
    if _held:
        return next(iter(_held))
    slots.mkdir(parents=True, exist_ok=True)
    for gpu in gpus:
        handle = open(slots / f"gpu-{gpu}.lock", "w")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        _held[gpu] = handle
        return gpu
    return None


class GpuSlots(Callback):
    """Hydra callback: a parallel worker claims one GPU before its first job (see the module docstring)."""

    def __init__(self) -> None:
        self._launcher_pid = os.getpid()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._launcher_pid = os.getpid()  # the process that launches; pickled with the callback into workers

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.getpid() == self._launcher_pid:  # the sequential launcher: the job runs here, on what it sees
            return
        gpus = visible_gpus()
        if len(gpus) < 2 and not _held:
            return
        gpu = claim_gpu(gpus)
        if gpu is None:
            raise SystemExit(
                f"no free GPU for this job: all of {gpus} are held by other workers; set "
                f"hydra.launcher.n_jobs to at most {len(gpus)} (one job per GPU)"
            )
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
