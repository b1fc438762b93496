"""The small-data plan's comparisons example by example: the exploratory per-example analysis its
plan names (``results/smalldata/PREREGISTRATION.md``, "Exploratory, not decided on").

    python -m scripts.reports.smalldata_examples [--plan results/smalldata/plan.json]
                                         [--reports results/reports] [--out results/smalldata]
                                         [--readme README.md]

Every confirmatory run keeps its test predictions at every epoch (``train.test_each_epoch``), one per
test example in the dataset's order, and every run of the suite sees the same 500 test examples. So a
comparison of arms ``a`` and ``b`` under a score rule is a matrix: seed ``s`` × example ``j``,
``d_sj = 100·(right_a − right_b)`` at the epoch the rule picks in each run. Its row means are the
per-seed differences the verdict tests; the verdict's t-interval holds the 500 examples fixed. This
page adds the interval over seeds *and* examples (:func:`scripts.reports.stats.crossed`): what the
difference would be on the task's examples, not on this test set, and how much of its uncertainty the
test set's size accounts for. It attaches no word: the plan decides on the seeds' intervals alone.
Writes ``per_example.md`` and ``per_example.json`` (the same rows as data, for the results site); with ``--readme``, README's ``<!-- examples:smalldata -->`` block (the primary
family under the primary rule).

Read before anything is written: a run's kept predictions must have the test set's labels and must
recount the test accuracy its report states, or the page is refused naming the run.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from aslora.harness.training.kept_predictions import decode_classes
from hydra_glue import ROOT
from scripts.reports.smalldata_outcomes import (
    RULES,
    arm_runs,
    primary_family,
    read_plan,
    rule_order,
    run_counts,
    scored_epoch,
)
from scripts.reports.smalldata_verdict_text import replace_block, status_phrase
from scripts.reports.stats import Crossed, crossed, t_interval

PLAN = ROOT / "results" / "smalldata" / "plan.json"


def correct(report: dict, rule: str) -> tuple[np.ndarray, str] | None:
    """``(right, labels)`` at the epoch ``rule`` picks: 1 where the kept prediction is the label, in
    the dataset's order; ``None`` where the run kept no predictions or no epoch qualifies.

    Raises:
        SystemExit: predictions and labels of different lengths, or a recount that is not the
            report's test accuracy at that epoch (the run is named).
    """
    kept = report.get("test_predictions")
    record = scored_epoch(report, rule)
    if not kept or record is None or str(record["epoch"]) not in kept["epochs"]:
        return None
    labels = np.array(decode_classes(kept["labels"]))
    predicted = np.array(decode_classes(kept["epochs"][str(record["epoch"])]))
    if predicted.shape != labels.shape:
        raise SystemExit(
            f"{report['run_name']}: epoch {record['epoch']} kept {predicted.size} predictions for {labels.size} labels"
        )
    right = (predicted == labels).astype(float)
    stated = record.get("test", {}).get("accuracy")
    if stated is None or abs(right.mean() - stated) > 1e-9:
        raise SystemExit(
            f"{report['run_name']}: epoch {record['epoch']}'s kept predictions score {right.mean():.6f}, "
            f"its report says test accuracy {stated}: not the predictions it was scored on"
        )
    return right, kept["labels"]


@dataclass(frozen=True)
class ExampleComparison:
    a: str
    b: str
    rule: str
    seeds: int
    """Paired seeds with kept predictions in both arms."""
    seed_interval: tuple[float, float]
    """The verdict's t-interval over seeds (the test set held fixed)."""
    both: Crossed
    """The interval over seeds and examples."""
    a_more: int
    """Test examples arm a gets right in more seeds than arm b."""
    b_more: int


def comparisons(plan: dict, runs: dict[str, list[dict]]) -> list[ExampleComparison]:
    """Every comparison of the plan under every rule it scores, where two or more seeds pair.

    Raises:
        SystemExit: runs whose kept labels differ (a different test set), or a bad recount (:func:`correct`).
    """
    out = []
    for rule in rule_order(plan):
        right: dict[str, dict[int, np.ndarray]] = {}
        test_set: dict[str, str] = {}  # labels → the first run that had them
        for label, reports in runs.items():
            first, last = plan["seeds"].get(label, (-np.inf, np.inf))
            for report in reports:
                found = correct(report, rule) if first <= report["seed"] <= last else None
                if found is None:
                    continue
                test_set.setdefault(found[1], report["run_name"])
                right.setdefault(label, {})[report["seed"]] = found[0]
        if len(test_set) > 1:
            raise SystemExit(f"runs kept predictions for different test sets: {sorted(test_set.values())}")
        for family in plan["families"]:
            for c in family["comparisons"]:
                a, b = right.get(c["a"], {}), right.get(c["b"], {})
                seeds = sorted(set(a) & set(b))
                if len(seeds) < 2:
                    continue
                d = plan["scale"] * np.stack([a[s] - b[s] for s in seeds])
                wins = d.sum(axis=0)  # per example: seeds a got it right and b not, minus the reverse (× scale)
                out.append(
                    ExampleComparison(
                        c["a"],
                        c["b"],
                        rule,
                        len(seeds),
                        t_interval(d.mean(axis=1)),  # the verdict's, over the per-seed differences
                        crossed(d),
                        int((wins > 0).sum()),
                        int((wins < 0).sum()),
                    )
                )
    return out


def page(plan: dict, found: list[ExampleComparison], present: int, planned: int) -> str:
    lines = [
        "<!-- generated by scripts/reports/smalldata_examples.py from results/smalldata/plan.json and "
        "results/reports; do not edit -->",
        f"# Small-data suite: the plan's comparisons example by example (`{plan['plan']}`)",
        "",
        f"Exploratory, as [the plan](PREREGISTRATION.md) names it: no word is attached; the words are "
        f"[the verdict's](verdict.md). Status: **{status_phrase(present, planned)}**. Each row pairs the "
        f"confirmatory seeds (6 on) that kept their test predictions in both arms: seeds × the same "
        f"{f'{found[0].both.examples} ' if found else ''}test examples, scored at the epoch the rule picks in each run "
        "(`python -m scripts.reports.smalldata_examples`).",
        "",
        "- **over seeds**: the verdict's 95 % t-interval — what another seed would do on *this* test set.",
        "- **over seeds and examples**: the 95 % interval of a crossed design (seeds × examples, "
        "Satterthwaite df; `scripts/reports/stats.py`, `crossed`) — what another seed would do on the "
        "task's examples; **examples' share** is how much of its variance the choice of test examples "
        "accounts for (more test examples would shrink that part; more seeds would not).",
        "- **examples a / b gets right more often**: test examples one arm gets right in more of the seeds "
        "than the other (the rest: in as many).",
        "",
    ]
    for rule in dict.fromkeys(c.rule for c in found):
        lines += [
            f"## {RULES[rule]}" + (" (the plan's primary rule)" if rule == plan["primary_rule"] else ""),
            "",
            "| A − B | n seeds | mean | over seeds | over seeds and examples (df) | examples' share | "
            "examples A / B gets right more often |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in (c for c in found if c.rule == rule):
            both = c.both
            lines.append(
                f"| {c.a} − {c.b} | {c.seeds} | {both.mean:+.2f} | [{c.seed_interval[0]:+.2f}, "
                f"{c.seed_interval[1]:+.2f}] | [{both.low:+.2f}, {both.high:+.2f}] ({both.df:.0f}) | "
                f"{both.examples_share:.0%} | {c.a_more} / {c.b_more} |"
            )
        lines.append("")
    if not found:
        lines.append("No comparison has two paired seeds with kept predictions yet.")
    return "\n".join(lines).rstrip() + "\n"


def readme_block(plan: dict, found: list[ExampleComparison]) -> str:
    """The primary family's comparisons under the primary rule, over seeds and examples."""
    primary = {(c["a"], c["b"]) for c in primary_family(plan)["comparisons"]}
    rows = [c for c in found if c.rule == plan["primary_rule"] and (c.a, c.b) in primary]
    if not rows:
        return "No primary comparison has two paired seeds with kept predictions yet."
    lines = [
        f"Over seeds *and* test examples (exploratory; [per_example.md](results/smalldata/per_example.md)): the "
        f"verdict's intervals hold the {rows[0].both.examples} test examples fixed; counting the draw of those "
        "examples from the task too, they widen to:"
    ]
    for c in rows:
        lines.append(
            f"- *{c.a} − {c.b}*: {c.both.mean:+.2f} [{c.both.low:+.2f}, {c.both.high:+.2f}], n = {c.seeds} seeds × "
            f"{c.both.examples} examples ({'excludes' if c.both.low > 0 or c.both.high < 0 else 'includes'} 0); "
            f"the examples' share of its variance {c.both.examples_share:.0%}."
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--reports", type=Path, default=ROOT / "results" / "reports")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "smalldata")
    parser.add_argument("--readme", type=Path, default=None, help="fill README's <!-- examples:smalldata --> block")
    args = parser.parse_args(argv)
    plan = read_plan(args.plan)
    runs = arm_runs(args.reports, plan["grid"])
    found = comparisons(plan, runs)  # every run read and checked before anything is written
    present, planned = run_counts(plan, runs)
    readme = None
    if args.readme:  # a README without the block is refused before anything is written
        readme = replace_block(args.readme.read_text(), "examples:smalldata", readme_block(plan, found))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "per_example.md").write_text(page(plan, found, present, planned))
    data = {"plan": plan["plan"], "status": status_phrase(present, planned), "comparisons": [asdict(c) for c in found]}
    (args.out / "per_example.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out / 'per_example.md'} ({len(found)} comparisons; {present} of {planned} planned runs)")
    if readme is not None:
        args.readme.write_text(readme)
        print(f"filled {args.readme}'s examples block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
