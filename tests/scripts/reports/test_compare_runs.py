"""scripts/reports/compare_runs.py: what counts as reproducing (counted metrics and ties exact, losses within a
tolerance, launch-only settings ignored) on constructed reports, and on the committed pair the
results README cites."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from scripts.reports.compare_runs import compare, main

ROOT = Path(__file__).resolve().parents[3]


def _report() -> dict:
    return {
        "run_name": "r",
        "config": {
            "seed": 1,
            "run_name": "r",
            "experiments_dir": "experiments",
            "train": {"lr": 0.001, "progress_bar": False},
        },
        "epochs": [
            {
                "epoch": e,
                "step": 10 * e,
                "train_loss": 0.7 - 0.1 * e,
                "val": {"accuracy": 0.5 + 0.1 * e, "loss": 0.6},
                "test": {"accuracy": 0.6},
            }
            for e in (1, 2)
        ],
        "merge_history": [{"step": 5, "kept": "query_2", "retired": "query_1"}],
        "best": {"epoch": 2, "metric": 0.7},
    }


def _verdict(b: dict, **kwargs) -> tuple[str, bool]:
    lines, ok = compare(_report(), b, **kwargs)
    return lines[-1], ok


def test_a_run_reproduces_itself_whatever_it_was_named_or_where_it_wrote():
    b = _report()
    b["config"].update(run_name="other", experiments_dir="/elsewhere")
    b["config"]["train"]["progress_bar"] = True
    b["config"]["train"]["test_each_epoch"] = True  # a setting a later code version added
    lines, ok = compare(_report(), b)
    assert ok and lines[-1] == "reproduces"
    assert "settings only one report has (other code versions): train.test_each_epoch" in lines


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (lambda r: r["epochs"][1]["val"].update(accuracy=0.701), "val accuracy"),
        (lambda r: r["epochs"][0]["test"].update(accuracy=0.6001), "test accuracy"),
        (lambda r: r["epochs"][0]["val"].update(loss=0.61), "val loss"),
        (lambda r: r["merge_history"][0].update(step=6), "ties"),
        (lambda r: r["best"].update(epoch=1), "best epoch"),
        (lambda r: r["config"]["train"].update(lr=0.003), "configuration"),
        (lambda r: r["epochs"][1].update(train_loss=0.51), "training loss"),
    ],
)
def test_any_difference_in_what_the_run_computed_is_named(edit, named):
    b = copy.deepcopy(_report())
    edit(b)
    verdict, ok = _verdict(b)
    assert not ok and verdict.startswith("differs:") and named in verdict, verdict


def test_losses_within_the_tolerance_still_reproduce():
    b = _report()
    b["epochs"][0]["val"]["loss"] += 5e-5
    b["epochs"][1]["train_loss"] += 5e-5
    assert _verdict(b) == ("reproduces", True)
    assert _verdict(b, loss_tolerance=1e-5)[1] is False


def test_the_committed_dirty_exploratory_row_reproduces_at_a_clean_commit(capsys, tmp_path):
    reports = ROOT / "results" / "reports"
    name = "minilm-l6_rt_polarity_aslora_train.lr=0.001_s1.json"
    original, rerun = reports / f"smalldata_{name}", reports / f"smalldata-lr_{name}"
    assert json.loads(original.read_text())["environment"]["git_dirty"] is True
    assert json.loads(rerun.read_text())["environment"]["git_dirty"] is False
    assert main([str(original), str(rerun)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("\nreproduces")
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main([str(original), str(tmp_path / "bad.json")]) == 2


def test_a_metric_only_one_report_logs_is_listed_not_counted():
    b = _report()
    for epoch in b["epochs"]:
        epoch["test"]["loss"] = 0.5  # a later code version logs the test loss too
    lines, ok = compare(_report(), b)
    assert ok and "test metrics of every epoch: accuracy identical, loss only in one report" in lines


def test_a_loss_selected_best_epoch_is_held_to_the_tolerance():
    a, b = _report(), _report()
    a["main_metric"] = b["main_metric"] = "loss"
    b["best"]["metric"] += 3e-7
    assert compare(a, b)[1] is True
    b["best"]["metric"] += 1e-3
    assert compare(a, b)[0][-1] == "differs: best epoch"
