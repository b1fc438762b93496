"""The small-data suite's verdict, as its plan says (``results/smalldata/PREREGISTRATION.md``).

    python -m scripts.reports.smalldata_verdict [--plan results/smalldata/plan.json] [--reports results/reports]
                                        [--out results/smalldata] [--readme README.md]

Reads the plan (``plan.json``: the grid, the metric, the margin, alpha, the score rules, the seeds and
the families of comparisons) and the committed reports, and writes

* ``verdict.md`` — per family and score rule: each comparison's mean paired difference, 95 %
  t-interval, n, exact sign-flip p and TOST p (both Holm-adjusted within the family), the minimal
  detectable effect, and the **word** the plan assigns (``smalldata_outcomes.decide``); per arm, the
  lr, the seeds present, the adapter size at the scored epoch and the test score; the positive
  controls; the same statistics, without words, on the exploratory seeds 1–5;
* ``verdict.json`` — the same outcomes as data, each confirmatory one with its planned n, beside the
  plan's status, alpha, margin and score rules (the results site reads it);
* ``smalldata_verdict.png`` (``--figure``; default ``<out>/../figures/``) — every comparison's interval
  over the margin, with its word and the exploratory seeds beneath (:mod:`scripts.reports.plot_verdict`);
* with ``--readme``, README's ``<!-- verdict:smalldata -->``, ``<!-- exploratory:smalldata -->`` and
  ``<!-- headline:smalldata -->`` blocks, generated from the same outcomes.

The arithmetic lives in :mod:`scripts.reports.smalldata_outcomes`, the page in
:mod:`scripts.reports.smalldata_verdict_text`. Nothing here is typed by hand: change the plan or the
reports and the words change with them.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

from hydra_glue import ROOT
from scripts.grids.smalldata import read_arm_lr
from scripts.reports import plot_verdict
from scripts.reports.smalldata_outcomes import (
    RULES,
    arm_runs,
    exploratory,
    planned_pairs,
    read_plan,
    run_counts,
    verdict,
)
from scripts.reports.smalldata_verdict_text import (
    exploratory_block,
    headline,
    readme_block,
    replace_block,
    status_phrase,
    verdict_markdown,
)

PLAN = ROOT / "results" / "smalldata" / "plan.json"


def plan_commit(plan_path: Path) -> str | None:

    try:
        out = subprocess.run(
            ["git", "log", "--diff-filter=A", "--format=%h", "--", str(plan_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commits = out.stdout.split()
    return commits[-1] if out.returncode == 0 and commits else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plan", type=Path, default=PLAN)
    parser.add_argument("--reports", type=Path, default=ROOT / "results" / "reports")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "smalldata")
    parser.add_argument("--readme", type=Path, default=None, help="fill README's <!-- verdict:smalldata --> block")
    parser.add_argument("--figure", type=Path, default=None, help="default: <out>/../figures/smalldata_verdict.png")
    args = parser.parse_args(argv)
    figure = args.figure or args.out.parent / "figures" / "smalldata_verdict.png"
    plan = read_plan(args.plan)
    runs = arm_runs(args.reports, plan["grid"])
    outcomes = verdict(plan, runs)
    present, planned = run_counts(plan, runs)
    arm_lr = args.out / "arm_lr.csv"
    lrs = read_arm_lr(arm_lr) if arm_lr.is_file() else {}
    explored = exploratory(plan, args.reports)
    commit = plan_commit(args.plan)
    page = verdict_markdown(
        plan,
        runs,
        lrs,
        outcomes,
        explored,
        (present, planned),
        commit,
        args.reports,
        args.out.parent / "protocol" / "chosen_lr.csv",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verdict.md").write_text(page)
    data = {  # what a reader of the outcomes needs beside them, so the site reads this file alone
        "plan": plan["plan"],
        "plan_commit": commit,
        "runs_present": present,
        "runs_planned": planned,
        "status": status_phrase(present, planned),
        "alpha": plan["alpha"],
        "margin": plan["margin"],
        "primary_rule": plan["primary_rule"],
        "rules": {rule: RULES[rule] for rule in plan["rules"]},
        "outcomes": [{**asdict(o), "planned": planned_pairs(plan, o.a, o.b)} for o in outcomes],
        "exploratory": [asdict(o) for o in explored],
    }
    (args.out / "verdict.json").write_text(json.dumps(data, indent=1) + "\n")
    rows = plot_verdict.forest_rows(plan, outcomes, explored)
    plot_verdict.plot(plan, rows, status_phrase(present, planned), figure)
    print(f"wrote {args.out / 'verdict.md'}, verdict.json and {figure} ({present} of {planned} planned runs)")
    if args.readme:
        text = args.readme.read_text()
        text = replace_block(text, "verdict:smalldata", readme_block(plan, outcomes, present, planned, commit))
        text = replace_block(text, "headline:smalldata", headline(plan, outcomes, present, planned))
        args.readme.write_text(replace_block(text, "exploratory:smalldata", exploratory_block(explored)))
        print(f"filled {args.readme}'s verdict block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
