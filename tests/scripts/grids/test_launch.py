"""Grids on parallel workers (issue 21): the same reports as the sequential launcher, restartable,
collected whole; and one GPU per worker when a machine has several."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scripts.reports.collect_results import main as collect
from tests.conftest import ROOT, SMOKE_GRID, run_cli

LAUNCHERS = [
    pytest.param(["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], id="parallel", marks=pytest.mark.slow),
    pytest.param(["hydra/launcher=local_submitit"], id="submitit-local", marks=pytest.mark.slow),
]


def _reports(experiments: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(experiments.glob("*/report.json"))}


def _same_training(ours: dict, reference: dict) -> None:
    """Same ties (steps, layers), same scores, and losses equal up to float summation order: a joblib
    worker runs torch on fewer threads (it caps each worker at cores / n_jobs), which reorders sums."""
    tie = ("step", "group", "kept", "retired", "layers_sharing")
    assert [{k: e.get(k) for k in tie} for e in ours["merge_history"]] == [
        {k: e.get(k) for k in tie} for e in reference["merge_history"]
    ]
    assert [e["distance"] for e in ours["merge_history"]] == pytest.approx(
        [e["distance"] for e in reference["merge_history"]], rel=1e-5
    )
    assert [e["train_loss"] for e in ours["epochs"]] == pytest.approx(
        [e["train_loss"] for e in reference["epochs"]], rel=1e-6
    )
    assert ours["best"]["validation"] == pytest.approx(reference["best"]["validation"], rel=1e-5)
    assert ours["best"]["test"] == pytest.approx(reference["best"]["test"], rel=1e-5)
    assert ours["params"] == reference["params"] and ours["variant"] == reference["variant"]


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_grid_on_parallel_workers_gives_the_sequential_reports(launcher, sequential_smoke_grid, tmp_path):
    experiments = tmp_path / "exp"
    grid = [*SMOKE_GRID, f"experiments_dir={experiments}", *launcher]
    result = run_cli(grid, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    ours, reference = _reports(experiments), _reports(sequential_smoke_grid)
    assert sorted(ours) == sorted(reference) and len(ours) == 2  # every job, each in its own directory
    for name in ours:
        _same_training(ours[name], reference[name])
        log = (experiments / name / "train.log").read_text()
        assert log.count("[aslora][INFO] - run ") == 1 and f"- run {name}\n" in log  # its own log only

    # restarted, the grid skips what is done and rewrites nothing
    written = {p: p.stat().st_mtime_ns for p in experiments.glob("*/report.json")}
    again = run_cli(grid, tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "grid: 2 jobs (2 done, skipped; 0 to run)" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in experiments.glob("*/report.json")} == written

    # collect sees every run of the grid
    out = tmp_path / "runs.csv"
    assert collect(["--experiments", str(experiments), "--out", str(out), "--replace"]) == 0
    rows = out.read_text().splitlines()
    assert len(rows) == 3 and all(any(name in row for row in rows) for name in ours)


CLAIM = (
    "import sys; from pathlib import Path; from scripts.grids.launch import claim_gpu\n"
    "slots = Path(sys.argv[1])\n"
    "print(claim_gpu(['0', '1'], slots), claim_gpu(['0', '1'], slots), flush=True)\n"
    "sys.stdin.read()\n"
)


def _worker(slots: Path) -> tuple[subprocess.Popen, str]:
    """A process that claims a GPU (twice: it must keep its first) and holds it until told to exit."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", CLAIM, str(slots)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    first, second = process.stdout.readline().split()
    assert first == second
    return process, first


def test_parallel_workers_hold_distinct_gpus_until_they_exit(tmp_path):
    a, gpu_a = _worker(tmp_path)
    b, gpu_b = _worker(tmp_path)
    c, gpu_c = _worker(tmp_path)
    assert {gpu_a, gpu_b} == {"0", "1"} and gpu_c == "None"  # a third worker finds none free
    a.communicate("")  # a exits (however it exits, the kernel drops its lock): its GPU is free again
    d, gpu_d = _worker(tmp_path)
    assert gpu_d == gpu_a
    for process in (b, c, d):
        process.communicate("")


def test_a_slurm_grid_without_partition_or_sbatch_stops_before_job_1_and_writes_nothing(tmp_path):
    experiments = tmp_path / "exp"
    result = run_cli(
        [*SMOKE_GRID, f"experiments_dir={experiments}", "hydra/launcher=slurm"],
        tmp_path,
        PATH=os.path.dirname(sys.executable),
    )
    assert result.returncode != 0
    assert "stopped before the first job: hydra/launcher=slurm needs hydra.launcher.partition=" in result.stderr
    assert "submits with sbatch and srun, not found on this machine" in result.stderr
    assert not experiments.exists() and "Traceback" not in result.stderr


def test_check_launcher_names_a_launcher_that_does_not_import_and_what_slurm_lacks(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from scripts.grids.launch import SLURM_TARGET, check_launcher

    missing = OmegaConf.create({"_target_": "hydra_plugins.no_such_launcher.NoSuchLauncher", "n_jobs": 2})
    (problem,) = check_launcher(missing, "parallel")
    assert problem.startswith("hydra/launcher=parallel: its launcher 'hydra_plugins.no_such_launcher.NoSuchLauncher'")
    assert problem.endswith("pip install no-such-launcher")  # the package is read off the class path
    renamed = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.NoSuchLauncher"}
    (problem,) = check_launcher(renamed, "parallel")
    assert "has no NoSuchLauncher" in problem and problem.endswith("pip install hydra-joblib-launcher")
    (problem,) = check_launcher({"n_jobs": 2}, "mine")  # no _target_ at all
    assert "hydra/launcher=mine: its launcher ''" in problem and "the package that provides it" in problem
    assert check_launcher({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, "basic") == []

    for tool in ("sbatch", "srun"):  # a login node: both on PATH
        (tmp_path / tool).write_text("#!/bin/sh\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert check_launcher({"_target_": SLURM_TARGET, "partition": "gpu"}, "slurm") == []
    (problem,) = check_launcher({"_target_": SLURM_TARGET, "partition": None}, "slurm")
    assert "needs hydra.launcher.partition=" in problem
    (tmp_path / "srun").unlink()
    (problem,) = check_launcher({"_target_": SLURM_TARGET, "partition": "gpu"}, "slurm")
    assert "submits with srun, not found" in problem


def test_every_shipped_launcher_names_the_installed_package_that_provides_it():
    """The pip package a refusal tells the user to install is read off each launcher config's class
    (no second list of launchers): for every configs/hydra/launcher/ it is an installed distribution."""
    from importlib import metadata

    from hydra import compose, initialize_config_dir

    from hydra_glue import CONFIG_DIR
    from scripts.grids.launch import plugin_package

    names = sorted(p.stem for p in (CONFIG_DIR / "hydra" / "launcher").glob("*.yaml"))
    assert names == ["local_submitit", "parallel", "slurm"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for name in names:
            cfg = compose("train", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
            package = plugin_package(cfg.hydra.launcher._target_)
            assert metadata.distribution(package).name.replace("_", "-") == package, name
