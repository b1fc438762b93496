"""scripts/reports/smalldata_verdict.py (and its arithmetic, smalldata_outcomes.py): the epoch each rule
scores and the size there, the plan's words from constructed p-values, and a verdict read from the plan
(a fixture whose word flips with the margin), and the figure's rows (plot_verdict.py)."""

from __future__ import annotations

import json

import pytest

from aslora.harness.runs.report import adapter_size_at_best
from scripts.grids.smalldata import ARMS
from scripts.reports.plot_verdict import forest_rows
from scripts.reports.smalldata_outcomes import (
    Outcome,
    adapter_size,
    decide,
    planned_pairs,
    read_plan,
    scored_epoch,
    untested,
)
from scripts.reports.smalldata_verdict import main
from tests.scripts.grids.test_smalldata import _fixture_report

PAPER, LORA8, LORA2 = ARMS[2], ARMS[0], ARMS[1]


def _aslora_report(val: list[float], test: list[float], sizes: list[int]) -> dict:
    return {
        "seed": 6,
        "main_metric": "accuracy",
        "params": {
            "before": {"adapter": 39_936, "num_distinct_B": 12},
            "after": {"adapter": sizes[-1], "num_distinct_B": 4},
        },
        "epochs": [
            {"epoch": i + 1, "val": {"accuracy": v}, "test": {"accuracy": t}, "adapter_params": s}
            for i, (v, t, s) in enumerate(zip(val, test, sizes, strict=True))
        ],
    }


def test_each_rule_scores_its_epoch_and_names_the_size_there():
    # best validation (0.80) at epoch 2, before the last tie; after it (epochs 4-5), 0.78 at epoch 5
    report = _aslora_report(
        val=[0.70, 0.80, 0.75, 0.76, 0.78],
        test=[0.69, 0.79, 0.74, 0.75, 0.77],
        sizes=[39_936, 27_648, 21_504, 15_360, 15_360],
    )
    best, final, last = (scored_epoch(report, rule) for rule in ("best", "final_size", "last"))
    assert (best["epoch"], adapter_size(report, best)) == (2, 27_648)  # 1.5× LoRA r=2: not ASLoRA's size
    assert (final["epoch"], adapter_size(report, final)) == (5, 15_360)
    assert last["epoch"] == 5
    report["epochs"][3]["val"]["accuracy"] = 0.78  # a tie in validation goes to the earlier epoch
    assert scored_epoch(report, "final_size")["epoch"] == 4


def test_older_reports_get_the_size_from_their_count_of_live_b_s():
    report = {
        "params": {
            "before": {"adapter": 39_936, "num_distinct_B": 12},
            "after": {"adapter": 15_360, "num_distinct_B": 4},
        }
    }
    # every B has one shape: (39,936 − 15,360) / (12 − 4) = 3,072 a B
    assert adapter_size(report, {"num_distinct_B": 12}) == 39_936
    assert adapter_size(report, {"num_distinct_B": 8}) == 27_648
    lora = {
        "params": {
            "before": {"adapter": 73_728, "num_distinct_B": None},
            "after": {"adapter": 73_728, "num_distinct_B": None},
        }
    }
    assert adapter_size(lora, {}) == 73_728


def test_the_size_at_the_best_epoch_is_recorded_or_derived_from_its_epoch():
    """runs.csv's adapter_params_at_best: ``params.at_best`` where a run recorded it; for older runs,
    the best epoch's count of live B's."""
    older = {
        "params": {
            "before": {"adapter": 39_936, "num_distinct_B": 12},
            "after": {"adapter": 15_360, "num_distinct_B": 4},
        },
        "best": {"epoch": 1},
        "epochs": [{"epoch": 1, "num_distinct_B": 8}, {"epoch": 2, "num_distinct_B": 4}],
    }
    assert adapter_size_at_best(older) == 27_648
    older["best"]["epoch"] = 2
    assert adapter_size_at_best(older) == 15_360
    newer = {**older, "params": {**older["params"], "at_best": {"adapter": 21_504}}}
    assert adapter_size_at_best(newer) == 21_504


@pytest.mark.parametrize(
    "p_diff, p_eq, mean, word",
    [
        (0.01, 0.30, +1.5, "better"),
        (0.01, 0.30, -1.5, "worse"),
        (0.40, 0.01, -0.1, "equivalent"),
        (0.01, 0.01, -0.5, "worse, within the margin"),
        (0.01, 0.01, +0.5, "better, within the margin"),
        (0.20, 0.20, -0.5, "inconclusive"),
        (0.05, 0.20, -3.0, "inconclusive"),  # p = alpha is not below it
    ],
)
def test_the_plan_s_words_from_constructed_p_values(p_diff, p_eq, mean, word):
    assert decide(p_diff, p_eq, mean, 0.05) == word


def _plan(tmp_path, margin: float) -> dict:
    plan = {
        "plan": "fixture",
        "grid": "smalldata-confirm",
        "metric": "accuracy",
        "scale": 100,
        "unit": "points",
        "alpha": 0.05,
        "margin": margin,
        "power": 0.8,
        "primary_rule": "best",
        "rules": ["best"],
        "seeds": {PAPER.label: [6, 17], LORA2.label: [6, 17]},
        "families": [{"name": "primary", "comparisons": [{"a": PAPER.label, "b": LORA2.label, "claim": "c"}]}],
    }
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    return plan


def _write_reports(tmp_path) -> None:
    """12 seeds, ASLoRA 0.4–0.8 points below LoRA r=2 on every seed (mean −0.6, a tight spread)."""
    directory = tmp_path / "reports"
    directory.mkdir()
    for seed in range(6, 18):
        gap = [0.004, 0.006, 0.008][seed % 3]
        for arm, test in ((LORA2, 0.78), (PAPER, 0.78 - gap)):
            report = _fixture_report(arm, seed, test, [0.70, 0.75], extra=("sweep=smalldata_confirm",))
            report["epochs"][-1]["test"] = {"accuracy": test}
            for record in report["epochs"]:  # no ties in this fixture: one size throughout
                record["adapter_params"] = report["params"]["after"]["adapter"]
            report["params"]["before"] = dict(report["params"]["after"])
            (directory / f"smalldata-confirm_{arm.adapter}_{len(arm.overrides)}_{seed}.json").write_text(
                json.dumps(report)
            )


@pytest.mark.parametrize("margin, word", [(1.0, "worse, within the margin"), (0.5, "worse")])
def test_the_verdict_reads_its_words_from_the_plan_and_the_margin_flips_one(tmp_path, margin, word):
    _plan(tmp_path, margin)
    _write_reports(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(
        "x\n<!-- verdict:smalldata -->\nSTALE\n<!-- /verdict:smalldata -->\n"
        "<!-- exploratory:smalldata -->\n<!-- /exploratory:smalldata -->\n"
        "<!-- headline:smalldata -->\n<!-- /headline:smalldata -->\ny\n"
    )
    out = tmp_path / "out"
    argv = ["--plan", str(tmp_path / "plan.json"), "--reports", str(tmp_path / "reports"), "--out", str(out)]
    assert main([*argv, "--readme", str(readme)]) == 0
    verdict = json.loads((out / "verdict.json").read_text())
    (outcome,) = verdict["outcomes"]
    assert outcome["n"] == 12 and outcome["mean"] == pytest.approx(-0.6)
    assert outcome["word"] == word
    assert verdict["runs_present"] == verdict["runs_planned"] == 24
    # what the site needs beside the outcomes, read off the plan
    assert outcome["planned"] == 12 and verdict["status"] == "complete: all 24 confirmatory runs in; words final"
    assert (verdict["primary_rule"], verdict["margin"]) == ("best", margin)
    assert verdict["rules"] == {"best": "best validation epoch"}
    text = readme.read_text()
    assert "STALE" not in text and f"**{word}**" in text and text.startswith("x\n") and text.endswith("y\n")
    assert "n = 12 of 12 planned" in text  # seeds 6-17 in both arms, all present
    # the opening answer: the plan's word for its primary comparison, with the runs it rests on
    assert (
        f"(complete: all 24 confirmatory runs in; words final) gives, in the words its plan fixed before the runs: *{PAPER.label}* − *{LORA2.label}*: **{word}**."
        in text
    )
    figure = (
        tmp_path / "figures" / "smalldata_verdict.png"
    )  # beside --out, as results/figures is beside results/smalldata
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_has_a_row_per_planned_comparison_in_the_plans_order():
    plan = {
        "primary_rule": "final_size",
        "families": [
            {
                "name": "primary",
                "comparisons": [{"a": PAPER.label, "b": LORA2.label}, {"a": PAPER.label, "b": LORA8.label}],
            },
            {"name": "control", "comparisons": [{"a": LORA8.label, "b": LORA2.label}]},
        ],
    }

    def outcome(rule, a, b, mean, n=12):
        return Outcome("f", rule, a, b, "c", n, mean, mean - 1, mean + 1, 1.0, 0.5, 0.5, 0.5, 0.5, 1.0, "inconclusive")

    confirmatory = [
        outcome("best", PAPER.label, LORA2.label, -9.0),  # another rule: not the primary's
        outcome("final_size", PAPER.label, LORA2.label, -1.0),
        outcome("final_size", LORA8.label, LORA2.label, +0.2),
        Outcome("primary", "final_size", PAPER.label, LORA8.label, "c", 0, *[None] * 10),  # none run yet
    ]
    exploratory = [
        outcome("best", PAPER.label, LORA8.label, -2.0, n=5),
        outcome("final_size", PAPER.label, LORA8.label, 7.0),
    ]
    rows = forest_rows(plan, confirmatory, exploratory)
    assert [r.paired for r in rows] == [12, 0, 12]
    assert rows[1].arms == (PAPER.label, LORA8.label)
    assert [untested(n) for n in (0, 1, 12)] == ["not yet run", "1 paired seed: too few to test", "n = 12"]
    assert [r.label for r in rows] == [
        f"{PAPER.label} − {LORA2.label}",
        f"{PAPER.label} − {LORA8.label}",
        f"{LORA8.label} − {LORA2.label}",
    ]
    assert [r.family for r in rows] == ["primary", "primary", "control"]
    assert [None if r.confirmatory is None else r.confirmatory.mean for r in rows] == [-1.0, None, 0.2]
    assert [None if r.exploratory is None else r.exploratory.mean for r in rows] == [None, -2.0, None]


def test_a_plan_naming_an_unknown_arm_or_rule_is_refused(tmp_path):
    plan = _plan(tmp_path, 1.0)
    plan["seeds"]["LoRA r=16"] = [6, 7]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"unknown arm\(s\) \['LoRA r=16'\]"):
        read_plan(tmp_path / "plan.json")
    del plan["seeds"]["LoRA r=16"]
    plan["primary_rule"] = "median"
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(SystemExit, match=r"unknown score rule\(s\) \['median'\]"):
        read_plan(tmp_path / "plan.json")


def test_a_comparisons_planned_n_is_the_seeds_both_arms_run():
    plan = {"seeds": {PAPER.label: [6, 25], LORA8.label: [6, 15], LORA2.label: [30, 31]}}
    assert planned_pairs(plan, PAPER.label, LORA8.label) == 10  # 6-15 in both
    assert planned_pairs(plan, LORA8.label, PAPER.label) == 10
    assert planned_pairs(plan, PAPER.label, PAPER.label) == 20
    assert planned_pairs(plan, LORA8.label, LORA2.label) == 0  # no seed in common


def test_below_five_paired_seeds_the_mean_and_each_seed_are_shown_without_an_interval(tmp_path):
    _plan(tmp_path, 1.0)
    _write_reports(tmp_path)
    for path in (tmp_path / "reports").glob("*.json"):
        if int(path.stem.rsplit("_", 1)[1]) > 8:  # keep seeds 6-8: three paired seeds
            path.unlink()
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- verdict:smalldata -->\n<!-- /verdict:smalldata -->\n<!-- exploratory:smalldata -->\n"
        "<!-- /exploratory:smalldata -->\n<!-- headline:smalldata -->\n<!-- /headline:smalldata -->\n"
    )
    out = tmp_path / "out"
    argv = ["--plan", str(tmp_path / "plan.json"), "--reports", str(tmp_path / "reports"), "--out", str(out)]
    assert main([*argv, "--readme", str(readme)]) == 0
    (outcome,) = json.loads((out / "verdict.json").read_text())["outcomes"]
    assert outcome["n"] == 3 and outcome["low"] is not None  # computed, but shown nowhere
    line = next(line for line in readme.read_text().splitlines() if line.startswith("- *"))
    values = ", ".join(f"{d:+.1f}" for d in outcome["differences"])
    assert len(outcome["differences"]) == 3
    assert abs(sum(outcome["differences"]) / 3 - outcome["mean"]) < 1e-9
    assert f"{outcome['mean']:+.2f} (n < 5: no interval; per seed {values}), n = 3 of 12 planned" in line
    assert "the preregistered test (PARTIAL: 6 of 24 confirmatory runs; words provisional) gives" in readme.read_text()
    assert f"{outcome['low']:+.2f}" not in line
    row = next(line for line in (out / "verdict.md").read_text().splitlines() if line.startswith("| primary |"))
    assert f"(n < 5: no interval; per seed {values})" in row and f"{outcome['low']:+.2f}," not in row


@pytest.mark.parametrize("n, explained", [(3, True), (12, False)])
def test_the_figure_s_legend_says_what_a_bare_mean_is_where_one_is_drawn(tmp_path, monkeypatch, n, explained):
    import matplotlib.axes

    from scripts.reports import plot_verdict

    plan = {
        "plan": "p",
        "unit": "points",
        "alpha": 0.05,
        "margin": 1.0,
        "primary_rule": "final_size",
        "seeds": {PAPER.label: [6, 17], LORA2.label: [6, 17]},
        "families": [{"name": "primary", "comparisons": [{"a": PAPER.label, "b": LORA2.label}]}],
    }
    outcome = Outcome(
        "primary", "final_size", PAPER.label, LORA2.label, "c", n, -1.0, -2.0, 0.0, 1.0, *[0.5] * 4, 1.0, "inconclusive"
    )
    labels = []
    legend = matplotlib.axes.Axes.legend
    monkeypatch.setattr(
        matplotlib.axes.Axes,
        "legend",
        lambda ax, **k: labels.extend(h.get_label() for h in k["handles"]) or legend(ax, **k),
    )
    plot_verdict.plot(plan, forest_rows(plan, [outcome], []), "complete", tmp_path / "f.png")
    assert any(label.startswith("mean only: fewer than 5 paired seeds") for label in labels) == explained
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"


def test_the_committed_verdict_and_readme_blocks_regenerate_from_the_committed_reports(tmp_path):
    """README's verdict and example blocks, verdict.md/.json and per_example.md/.json are what the committed
    reports and plan give today: no number in them was typed or left stale."""
    import shutil

    from hydra_glue import ROOT
    from scripts.reports import smalldata_examples

    out = tmp_path / "results" / "smalldata"
    out.mkdir(parents=True)
    shutil.copy(ROOT / "results" / "smalldata" / "arm_lr.csv", out)
    (tmp_path / "results" / "protocol").mkdir()
    shutil.copy(ROOT / "results" / "protocol" / "chosen_lr.csv", tmp_path / "results" / "protocol")
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    reports = ["--reports", str(ROOT / "results" / "reports"), "--out", str(out), "--readme", str(readme)]
    assert main([*reports, "--figure", str(tmp_path / "verdict.png")]) == 0
    assert smalldata_examples.main(reports) == 0
    assert readme.read_text() == (ROOT / "README.md").read_text(), "README's generated blocks are stale"
    for name in ("verdict.md", "verdict.json", "per_example.md", "per_example.json"):
        assert (out / name).read_text() == (ROOT / "results" / "smalldata" / name).read_text(), f"{name} is stale"
