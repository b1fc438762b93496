"""metrics.csv keeps every row across a resume, is untouched by a run refused before it logs, and is
never written through a symbolic link."""

from __future__ import annotations

import csv

import pytest

from aslora.harness.measuring.tracking import Tracker
from aslora.harness.runs.settings import WandbSettings


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _log(run_dir, steps, resume=False):
    with Tracker(WandbSettings(), "r", {}, run_dir=run_dir, metrics_csv=True, resume=resume) as tracker:
        for step in steps:
            tracker.log({"train/loss": float(step)}, step)


def test_a_resume_keeps_the_rows_before_its_checkpoint_and_replaces_the_rest(tmp_path):
    _log(tmp_path / "straight", range(1, 31))
    _log(tmp_path / "killed", range(1, 22))  # killed after step 21, its checkpoint at step 15
    _log(tmp_path / "killed", range(16, 31), resume=True)  # the resume re-runs steps 16 on
    assert _rows(tmp_path / "killed" / "metrics.csv") == _rows(tmp_path / "straight" / "metrics.csv")
    assert len(_rows(tmp_path / "straight" / "metrics.csv")) == 31


def test_a_run_refused_before_it_logs_changes_nothing_and_a_fresh_run_starts_empty(tmp_path):
    _log(tmp_path, range(1, 16))
    before = (tmp_path / "metrics.csv").read_bytes()
    with pytest.raises(RuntimeError):
        with Tracker(WandbSettings(), "r", {}, run_dir=tmp_path, metrics_csv=True, resume=True):
            raise RuntimeError("the checkpoint does not fit")
    assert (tmp_path / "metrics.csv").read_bytes() == before
    _log(tmp_path, [5])  # not a resume (overwrite): the old rows go
    assert _rows(tmp_path / "metrics.csv") == [["step", "key", "value"], ["5", "train/loss", "5.0"]]


def test_metrics_csv_is_never_written_through_a_link(tmp_path):
    outside = tmp_path / "elsewhere.csv"
    outside.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.csv").symlink_to(outside)
    with pytest.raises(ValueError, match="symbolic link"):
        _log(run, [1], resume=True)
    assert outside.read_text() == "precious\n"
