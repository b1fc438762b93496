"""A dirty row rerun at a clean commit: the pair is kept only when it is one, and the block says what the comparison found."""

from __future__ import annotations

import json

import pytest

from hydra_glue import ROOT
from scripts.reports import dirty_reruns


def _report(
    *, dirty: bool, val=(0.75, 0.77), loss=0.5, lr=0.01, prefix="protocol_", status="done", sha="abc1234"
) -> dict:
    return {
        "status": status,
        "run_name": f"{prefix}minilm-l6_rt_polarity_aslora_s1",
        "main_metric": "accuracy",
        "config": {"run_prefix": prefix, "seed": 1, "train": {"lr": lr}, "experiments_dir": "anywhere"},
        "epochs": [
            {"epoch": i + 1, "step": 63 * (i + 1), "train_loss": loss, "val": {"accuracy": v, "loss": 0.4}}
            for i, v in enumerate(val)
        ],
        "merge_history": [{"step": 30, "kept": "value_5", "retired": "value_4"}],
        "best": {"epoch": 2, "metric": max(val)},
        "environment": {"git_sha": sha + "ffff", "git_dirty": dirty, "device": "CPU: AMD EPYC (2 cores)"},
    }


@pytest.fixture
def layout(tmp_path):
    reports, outside = tmp_path / "reports", tmp_path / "experiments"
    reports.mkdir()
    outside.mkdir()
    original = reports / "protocol_run_s1.json"
    original.write_text(json.dumps(_report(dirty=True)))
    (reports / "protocol-lr_other.json").write_text(json.dumps(_report(dirty=True, prefix="protocol-lr_")))
    (reports / "protocol_clean.json").write_text(json.dumps(_report(dirty=False)))
    return reports, outside, original, tmp_path / "reruns" / "pairs.csv"


@pytest.mark.parametrize(
    ("original_kwargs", "rerun_kwargs", "message"),
    [
        ({"dirty": False}, {"dirty": False}, "did not run from a dirty tree"),
        ({"dirty": True}, {"dirty": True}, "ran from a dirty tree"),
        ({"dirty": True}, {"dirty": False, "status": "running"}, "status 'running'"),
        ({"dirty": True}, {"dirty": False, "lr": 0.03}, "is not a rerun of .*differs at train.lr"),
    ],
)
def test_keep_refuses_what_is_not_a_clean_rerun_of_a_dirty_row_and_writes_nothing(
    layout, original_kwargs, rerun_kwargs, message
):
    reports, outside, original, pairs = layout
    original.write_text(json.dumps(_report(**original_kwargs)))
    rerun = outside / "report.json"
    rerun.write_text(json.dumps(_report(**rerun_kwargs)))
    with pytest.raises(SystemExit, match=message):
        dirty_reruns.keep(original, rerun, pairs=pairs, reports=reports)
    assert not pairs.parent.exists()


def test_an_original_outside_the_committed_reports_is_refused(layout):
    reports, outside, _, pairs = layout
    stray = outside / "dirty.json"
    stray.write_text(json.dumps(_report(dirty=True)))
    with pytest.raises(SystemExit, match="is not a committed report"):
        dirty_reruns.keep(stray, stray, pairs=pairs, reports=reports)
    assert not pairs.parent.exists()


def test_a_kept_pair_is_compared_and_grids_without_one_are_named(layout):
    reports, outside, original, pairs = layout
    rerun = outside / "report.json"
    rerun.write_text(json.dumps(_report(dirty=False, loss=0.50002, sha="def5678")))
    kept = dirty_reruns.keep(original, rerun, pairs=pairs, reports=reports)
    assert kept == pairs.parent / original.name and json.loads(kept.read_text())["environment"]["git_dirty"] is False
    text = dirty_reruns.block(pairs, reports)
    assert (
        "- **protocol**: `protocol_minilm-l6_rt_polarity_aslora_s1` (`abc1234`, dirty, AMD EPYC (2 cores)) rerun as "
        in text
    )
    assert "(`def5678`, clean, AMD EPYC (2 cores)): **reproduces** — " in text
    assert "training loss per epoch: largest difference 2e-05" in text
    assert "Grids with dirty runs and no rerun kept: protocol-lr (1 dirty)." in text

    # one example more right in the rerun's second epoch: counted metrics must be identical
    rerun.write_text(json.dumps(_report(dirty=False, val=(0.75, 0.771), sha="def5678")))
    dirty_reruns.keep(original, rerun, pairs=pairs, reports=reports)
    assert "**differs: val accuracy, best epoch** — " in dirty_reruns.block(pairs, reports)
    assert len(pairs.read_text().splitlines()) == 2  # header and one pair: kept again, replaced, not a second row


def test_the_committed_block_regenerates_from_the_committed_pairs(tmp_path):
    readme = tmp_path / "README.md"
    committed = (ROOT / "results" / "README.md").read_text()
    readme.write_text(committed)
    assert dirty_reruns.main(["--readme", str(readme)]) == 0
    assert readme.read_text() == committed
