"""results/README's account of `make demo` is written from the kept report of a clean-tree run."""

from __future__ import annotations

import json

import pytest

from scripts.reports import demo_run


def _report(ties=(158, 253), plan_ties=(158, 253), at_best=27648, after=15360, dirty=False, status="done") -> dict:
    history = [{"step": s, "group": g} for s in ties for g in ("query", "value")]
    return {
        "status": status,
        "model": "minilm-l6",
        "task": "rt_polarity",
        "task_standin_for": "sst2",
        "main_metric": "accuracy",
        "train_examples": 10201,
        "wall_seconds": 406.4,
        "best": {"epoch": 1, "validation": {"accuracy": 0.79686}, "test": {"accuracy": 0.797}},
        "merge_history": history,
        "plan": {"total_steps": 638, "warmup_steps": 39, "merge_steps": list(plan_ties)},
        "params": {"lora_reference": 73728, "at_best": {"adapter": at_best}, "after": {"adapter": after}},
        "config": {
            "train": {"epochs": 2},
            "adapter": {"params": {"merge_start_fraction": 0.1, "merge_interval_fraction": 0.15}},
        },
        "environment": {
            "git_sha": "abcdef0123456789",
            "git_dirty": dirty,
            "device": "CPU: AMD EPYC (2 cores)",
            "packages": {"torch": "2.13.0+cpu"},
        },
    }


def test_the_block_states_plan_schedule_scores_and_both_sizes():
    text = demo_run.demo_text(_report())
    assert "commit `abcdef0`, CPU: AMD EPYC (2 cores), torch 2.13.0+cpu" in text
    assert "10,201 training examples, 2 epochs = 638 steps, warm-up 39; 6 min 46 s wall" in text
    # T_s = floor(0.1 · 638) = 63, m = floor(0.15 · 638) = 95: ties at 158 and 253
    assert "Ties (2 for query, 2 for value) at steps 158, 253 — the steps Algorithm 1 gives" in text
    assert "T_s = ⌊0.1 · 638⌋ = 63, m = ⌊0.15 · 638⌋ = 95" in text and "24.8 % of the run" in text
    assert "Best validation accuracy 0.7969 at epoch 1, test accuracy 0.7970 there" in text
    assert (
        "27,648 parameters (37.5 % of LoRA's 73,728); the run ends with 15,360 (20.8 %), so that score is not" in text
    )
    assert "final adapter's size" in demo_run.demo_text(_report(at_best=15360))
    assert "9 min 00 s wall" in demo_run.demo_text(_report() | {"wall_seconds": 539.6})


def test_ties_off_the_schedule_are_reported_not_hidden():
    text = demo_run.demo_text(_report(ties=(158, 254), plan_ties=(158, 254)))
    assert "the plan said [158, 254], Algorithm 1 gives [158, 253]" in text


@pytest.mark.parametrize(
    ("kwargs", "message"), [({"dirty": True}, "dirty tree"), ({"status": "running"}, "status 'running'")]
)
def test_keep_refuses_a_dirty_or_unfinished_run_and_writes_nothing(tmp_path, kwargs, message):
    source, kept = tmp_path / "report.json", tmp_path / "demo" / "report.json"
    source.write_text(json.dumps(_report(**kwargs)))
    with pytest.raises(SystemExit, match=message):
        demo_run.keep(source, kept)
    assert not kept.exists()


def test_main_keeps_the_report_and_fills_only_its_block(tmp_path):
    source, kept, readme = tmp_path / "report.json", tmp_path / "demo" / "report.json", tmp_path / "README.md"
    source.write_text(json.dumps(_report()))
    readme.write_text(
        "<!-- table:demo_run -->\nold\n<!-- /table:demo_run -->\n<!-- table:bench_speed -->\nx\n<!-- /table:bench_speed -->\n"
    )
    assert demo_run.main(["--keep", str(source), "--kept", str(kept), "--readme", str(readme)]) == 0
    assert json.loads(kept.read_text()) == _report()
    assert (
        "0.7969 at epoch 1" in readme.read_text() and "old" not in readme.read_text() and "\nx\n" in readme.read_text()
    )


def test_the_committed_block_regenerates_from_the_kept_report(tmp_path):
    from hydra_glue import ROOT

    kept = json.loads(demo_run.KEPT.read_text())
    assert kept["environment"]["git_dirty"] is False and kept["status"] == "done"
    copy, committed = tmp_path / "README.md", (ROOT / "results" / "README.md").read_text()
    copy.write_text(committed)
    assert demo_run.main(["--readme", str(copy)]) == 0
    assert copy.read_text() == committed
