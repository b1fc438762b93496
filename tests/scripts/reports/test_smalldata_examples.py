"""scripts/reports/smalldata_examples.py: the plan's comparisons example by example — the seeds' interval
is the verdict's, the crossed interval is the matrix's, and kept predictions that do not recount their
report, or belong to another test set, are refused with nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest

from scripts.grids.smalldata import ARMS
from scripts.reports.smalldata_examples import main
from scripts.reports.stats import crossed, paired
from tests.scripts.grids.test_smalldata import _fixture_report

LORA2, PAPER = ARMS[1], ARMS[2]
EXAMPLES = 40
LABELS = np.random.default_rng(0).integers(0, 2, EXAMPLES)


def _right(arm, seed: int) -> np.ndarray:
    """Which of the 40 examples a run gets right: LoRA r=2 the first 30 on every seed; ASLoRA the first
    25 plus a seed-dependent few of the rest (an example effect and a seed effect)."""
    right = np.zeros(EXAMPLES)
    if arm is LORA2:
        right[:30] = 1
    else:
        right[:25] = 1
        right[30 : 30 + seed % 4] = 1
    return right


def _setup(tmp_path, labels_of=lambda seed: LABELS, recount=lambda right: right.mean()) -> list:
    plan = {
        "plan": "fixture",
        "grid": "smalldata-confirm",
        "metric": "accuracy",
        "scale": 100,
        "alpha": 0.05,
        "margin": 1.0,
        "primary_rule": "best",
        "rules": ["best"],
        "seeds": {PAPER.label: [6, 13], LORA2.label: [6, 13]},
        "families": [{"name": "primary", "comparisons": [{"a": PAPER.label, "b": LORA2.label, "claim": "c"}]}],
    }
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    directory = tmp_path / "reports"
    directory.mkdir()
    for seed in range(6, 14):
        for arm in (LORA2, PAPER):
            right, labels = _right(arm, seed), labels_of(seed)
            report = _fixture_report(arm, seed, right.mean(), [0.70, 0.75], extra=("sweep=smalldata_confirm",))
            report["run_name"] = f"{arm.label} s{seed}"
            report["epochs"][-1]["test"] = {"accuracy": recount(right)}
            predicted = np.where(right == 1, labels, 1 - labels)
            report["test_predictions"] = {
                "labels": "".join(map(str, labels)),
                "epochs": {"2": "".join(map(str, predicted))},
            }
            (directory / f"smalldata-confirm_{arm.adapter}_{len(arm.overrides)}_{seed}.json").write_text(
                json.dumps(report)
            )
    return ["--plan", str(tmp_path / "plan.json"), "--reports", str(directory), "--out", str(tmp_path / "out")]


def test_the_seeds_interval_is_the_verdicts_and_the_crossed_one_is_the_matrix_s(tmp_path):
    argv = _setup(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- examples:smalldata -->\nSTALE\n<!-- /examples:smalldata -->\n")
    assert main([*argv, "--readme", str(readme)]) == 0
    seeds = range(6, 14)
    d = 100 * np.stack([_right(PAPER, s) - _right(LORA2, s) for s in seeds])
    by_seed = paired({s: 100 * _right(PAPER, s).mean() for s in seeds}, {s: 75.0 for s in seeds})
    both = crossed(d)
    assert both.examples_share > 0.5  # the fixture's five examples ASLoRA always misses
    row = next(line for line in (tmp_path / "out" / "per_example.md").read_text().splitlines() if "| 8 |" in line)
    # the first 25 both get right; 25-29 LoRA r=2 only (5); 30-32 ASLoRA on some seeds (3): wins 3 / 5
    assert row == (
        f"| {PAPER.label} − {LORA2.label} | 8 | {both.mean:+.2f} | [{by_seed.low:+.2f}, {by_seed.high:+.2f}] | "
        f"[{both.low:+.2f}, {both.high:+.2f}] ({both.df:.0f}) | {both.examples_share:.0%} | 3 / 5 |"
    )
    text = readme.read_text()
    assert "STALE" not in text and f"{both.mean:+.2f} [{both.low:+.2f}, {both.high:+.2f}], n = 8 seeds × 40" in text
    assert f"40 examples ({'excludes' if both.high < 0 else 'includes'} 0)" in text


@pytest.mark.parametrize(
    "setup, refusal",
    [
        ({"recount": lambda right: right.mean() + 0.025}, "not the predictions it was scored on"),
        ({"labels_of": lambda seed: LABELS if seed < 13 else 1 - LABELS}, "different test sets"),
    ],
)
def test_predictions_that_do_not_recount_or_pair_are_refused_with_nothing_written(tmp_path, setup, refusal):
    argv = _setup(tmp_path, **setup)
    with pytest.raises(SystemExit, match=refusal):
        main(argv)
    assert not (tmp_path / "out").exists()


def test_a_readme_without_the_block_is_refused_before_anything_is_written(tmp_path):
    argv = _setup(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text("no block\n")
    with pytest.raises(SystemExit, match="examples:smalldata"):
        main([*argv, "--readme", str(readme)])
    assert not (tmp_path / "out").exists() and readme.read_text() == "no block\n"
