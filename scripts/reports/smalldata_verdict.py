"""The small-data suite's verdict, as its plan says (``results/smalldata/PREREGISTRATION.md``).

    python -m scripts.reports.smalldata_verdict [--plan results/smalldata/plan.json] [--reports results/reports]
                                        [--out results/smalldata] [--readme README.md]

Reads the plan (``plan.json``: the grid, the metric, the margin, alpha, the score rules, the seeds and
the families of comparisons) and the committed reports, and writes

* ``verdict.md`` — per family and score rule: each comparison's mean paired difference, 95 %
  t-interval, n, exact sign-flip p and TOST p (both Holm-adjusted within the family), the minimal
  detectable effect, and the **word** the plan assigns (:func:`decide`); per arm, the lr, the seeds
  present, the adapter size at the scored epoch and the test score; the positive controls; the same
  statistics, without words, on the exploratory seeds 1–5;
* ``verdict.json`` — the same outcomes as data (the README's verdict block and the results site read it);
* with ``--readme``, README's ``<!-- verdict:smalldata -->`` block, generated from ``verdict.json``.

Nothing here is typed by hand: change the plan or the reports and the words change with them.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import subprocess
import sys
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from hydra_glue import ROOT
from scripts.grids.smalldata import ARMS, FINAL_GRID
from scripts.reports.stats import MIN_INTERVAL_N, holm, mde, paired, tost

PLAN = ROOT / "results" / "smalldata" / "plan.json"

RULES = {
    "final_size": "best validation epoch at the adapter's final size",
    "best": "best validation epoch",
    "last": "last epoch",
}
WORDS = (
    "better",
    "worse",
    "equivalent",
    "better, within the margin",
    "worse, within the margin",
    "inconclusive",
)


# --- the plan ------------------------------------------------------------------------------------
def read_plan(path: Path) -> dict:
    """``plan.json``, checked: every field the verdict needs, every arm a known arm.

    Raises:
        SystemExit: a missing file or field, an unknown arm or rule, a margin or alpha out of range.
    """
    if not path.is_file():
        raise SystemExit(f"no plan at {path}: the verdict is computed only as a committed plan says")
    plan = json.loads(path.read_text())
    missing = [
        k
        for k in ("plan", "grid", "metric", "scale", "alpha", "margin", "primary_rule", "rules", "seeds", "families")
        if k not in plan
    ]
    if missing:
        raise SystemExit(f"{path}: missing field(s) {missing}")
    labels = {arm.label for arm in ARMS}
    named = {c[k] for f in plan["families"] for c in f["comparisons"] for k in ("a", "b")} | set(plan["seeds"])
    if named - labels:
        raise SystemExit(f"{path}: unknown arm(s) {sorted(named - labels)}; known: {sorted(labels)}")
    rules = [*plan["rules"], plan["primary_rule"]]
    if set(rules) - set(RULES):
        raise SystemExit(f"{path}: unknown score rule(s) {sorted(set(rules) - set(RULES))}; known: {sorted(RULES)}")
    if not 0 < plan["alpha"] < 1 or not plan["margin"] > 0:
        raise SystemExit(f"{path}: alpha={plan['alpha']!r} must be in (0, 1) and margin={plan['margin']!r} positive")
    return plan


# --- which epoch a run is scored at ---------------------------------------------------------------
def adapter_size(report: dict, record: dict) -> int:
    """The adapter's parameters at the end of epoch ``record``: recorded per epoch by newer runs; for
    older ones, from the count of live B's (every B of a run has one shape, so each tie removes the
    same number: ``(before − after) / (B's before − B's after)``)."""
    if "adapter_params" in record:
        return int(record["adapter_params"])
    before, after = report["params"]["before"], report["params"]["after"]
    if "num_distinct_B" not in record or before.get("num_distinct_B") in (None, after.get("num_distinct_B")):
        return int(after["adapter"])
    per_b = (before["adapter"] - after["adapter"]) / (before["num_distinct_B"] - after["num_distinct_B"])
    return int(round(after["adapter"] + per_b * (record["num_distinct_B"] - after["num_distinct_B"])))


def scored_epoch(report: dict, rule: str) -> dict | None:
    """The epoch record rule ``rule`` picks, on validation only (ties: the earlier epoch); ``None``
    where no epoch qualifies. ``final_size``: among the epochs at which the adapter already has its
    final size (after the last tie)."""
    metric = report["main_metric"]
    epochs = report["epochs"]
    if rule == "last":
        return epochs[-1]
    if rule == "final_size":
        final = report["params"]["after"]["adapter"]
        epochs = [e for e in epochs if adapter_size(report, e) == final]
    if not epochs:
        return None
    sign = -1 if metric in ("loss", "perplexity") else 1
    return max(epochs, key=lambda e: (sign * e["val"][metric], -e["epoch"]))


@dataclass(frozen=True)
class Score:
    seed: int
    epoch: int
    test: float | None
    """``None``: that epoch's test was not scored (runs before ``train.test_each_epoch``)."""
    size: int


def score(report: dict, rule: str, scale: float) -> Score | None:
    record = scored_epoch(report, rule)
    if record is None:
        return None
    test = record.get("test", {}).get(report["main_metric"])
    return Score(report["seed"], record["epoch"], None if test is None else scale * test, adapter_size(report, record))


# --- the decision -------------------------------------------------------------------------------
def decide(p_diff: float, p_eq: float, mean: float, alpha: float) -> str:
    """The plan's word for one comparison from its Holm-adjusted p-values (PREREGISTRATION.md, Words)."""
    different, equivalent = p_diff < alpha, p_eq < alpha
    if different and equivalent:
        return "better, within the margin" if mean > 0 else "worse, within the margin"
    if different:
        return "better" if mean > 0 else "worse"
    if equivalent:
        return "equivalent"
    return "inconclusive"


@dataclass(frozen=True)
class Outcome:
    family: str
    rule: str
    a: str
    b: str
    claim: str
    n: int
    mean: float | None
    low: float | None
    high: float | None
    sd: float | None
    p_diff: float | None
    p_eq: float | None
    p_diff_holm: float | None
    p_eq_holm: float | None
    mde: float | None
    word: str | None
    """``None`` below two seeds (nothing to decide on)."""


def family_outcomes(family: dict, rule: str, scores: dict[str, dict[int, float]], plan: dict) -> list[Outcome]:
    """Every comparison of one family under one rule, Holm-adjusted within the family."""
    rows = []
    for c in family["comparisons"]:
        a, b = scores.get(c["a"], {}), scores.get(c["b"], {})
        shared = set(a) & set(b)
        if len(shared) < 2:
            rows.append((c, None))
            continue
        result = paired(a, b)
        rows.append((c, (result, tost(result.differences, plan["margin"]))))
    tested = [r for _, r in rows if r is not None]
    diff_holm = iter(holm([r[0].p for r in tested]))
    eq_holm = iter(holm([r[1] for r in tested]))
    outcomes = []
    for c, r in rows:
        if r is None:
            n = len(set(scores.get(c["a"], {})) & set(scores.get(c["b"], {})))
            outcomes.append(Outcome(family["name"], rule, c["a"], c["b"], c["claim"], n, *[None] * 10))
            continue
        result, p_eq = r
        pd_h, pe_h = next(diff_holm), next(eq_holm)
        outcomes.append(
            Outcome(
                family["name"],
                rule,
                c["a"],
                c["b"],
                c["claim"],
                result.n,
                result.mean,
                result.low,
                result.high,
                result.sd,
                result.p,
                p_eq,
                pd_h,
                pe_h,
                mde(result.sd, result.n, plan["alpha"], plan.get("power", 0.8)),
                decide(pd_h, pe_h, result.mean, plan["alpha"]),
            )
        )
    return outcomes


# --- reading the runs -----------------------------------------------------------------------------
def arm_runs(reports_dir: Path, grid: str) -> dict[str, list[dict]]:
    from scripts.reports.smalldata_report import arm_identities, by_arm, read_reports

    return by_arm(read_reports(reports_dir, grid), arm_identities())


def arm_scores(runs: dict[str, list[dict]], rule: str, scale: float, seeds: dict | None = None) -> dict:
    """arm → seed → test score under ``rule`` (runs without a test score at that epoch left out);
    ``seeds``: the plan's seed range per arm (others left out)."""
    out: dict[str, dict[int, float]] = {}
    for label, reports in runs.items():
        first, last = (seeds or {}).get(label, (-np.inf, np.inf))
        for report in reports:
            s = score(report, rule, scale)
            if s is not None and s.test is not None and first <= s.seed <= last:
                out.setdefault(label, {})[s.seed] = s.test
    return out


def verdict(plan: dict, runs: dict[str, list[dict]]) -> list[Outcome]:
    outcomes = []
    for rule in [plan["primary_rule"], *[r for r in plan["rules"] if r != plan["primary_rule"]]]:
        scores = arm_scores(runs, rule, plan["scale"], plan["seeds"])
        for family in plan["families"]:
            outcomes += family_outcomes(family, rule, scores, plan)
    return outcomes


# --- writing ----------------------------------------------------------------------------------------
def _num(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return "—" if x is None else (f"{x:.3f}" if x >= 0.001 else "<0.001")


def outcome_table(outcomes: list[Outcome], words: bool = True) -> list[str]:
    head = "| family | A − B | n | mean [95 % t-interval] | sign-flip p (Holm) | TOST p (Holm) | MDE (80 %) |"
    lines = [head + (" word |" if words else ""), "|---" * (7 + words) + "|"]
    for o in outcomes:
        interval = "—" if o.mean is None else f"{o.mean:+.2f} [{o.low:+.2f}, {o.high:+.2f}]"
        if o.mean is not None and o.n < MIN_INTERVAL_N:
            interval = f"{o.mean:+.2f} (n < {MIN_INTERVAL_N}: no interval)"
        cells = [
            o.family,
            f"{o.a} − {o.b}",
            str(o.n),
            interval,
            f"{_p(o.p_diff)} ({_p(o.p_diff_holm)})",
            f"{_p(o.p_eq)} ({_p(o.p_eq_holm)})",
            _num(o.mde),
        ]
        if words:
            cells.append(f"**{o.word}**" if o.word else "— (fewer than 2 seeds)")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def arm_table(plan: dict, runs: dict[str, list[dict]], lrs: dict[str, float]) -> list[str]:
    lines = [
        "| arm | lr | seeds planned | seeds present | "
        + " | ".join(f"{rule}: size at scored epoch · test median (min–max)" for rule in plan["rules"])
        + " |",
        "|---" * (4 + len(plan["rules"])) + "|",
    ]
    for arm in ARMS:
        if arm.label not in plan["seeds"]:
            continue
        first, last = plan["seeds"][arm.label]
        reports = [r for r in runs.get(arm.label, []) if first <= r["seed"] <= last]
        cells = []
        for rule in plan["rules"]:
            scores = [s for s in (score(r, rule, plan["scale"]) for r in reports) if s and s.test is not None]
            if not scores:
                cells.append("—")
                continue
            tests = [s.test for s in scores]
            size = int(np.median([s.size for s in scores]))
            cells.append(f"{size:,} · {np.median(tests):.1f} ({min(tests):.1f}–{max(tests):.1f})")
        lr = f"{lrs[arm.label]:g}" if arm.label in lrs else "—"
        lines.append(f"| {arm.label} | {lr} | {first}–{last} | {len(reports)} | " + " | ".join(cells) + " |")
    return lines


def controls(plan: dict, outcomes: list[Outcome], protocol_lrs: Path) -> list[str]:
    """The plan's positive controls: the control family's outcome (LoRA r=8 against r=2), and VeRA's
    chosen lr against LoRA's in the committed protocol lr stage (VeRA needs a far larger lr)."""
    lines = []
    for o in outcomes:
        if o.family == "control" and o.rule == plan["primary_rule"]:
            seen = (
                "not yet run"
                if o.word is None
                else f"{o.mean:+.2f} [{o.low:+.2f}, {o.high:+.2f}], n = {o.n}: **{o.word}**"
            )
            lines.append(f"- {o.a} − {o.b}: {seen}.")
    if protocol_lrs.is_file():
        with open(protocol_lrs, newline="") as f:
            chosen = {(r["task"], r["adapter"], r["variant"]): float(r["lr"]) for r in csv.DictReader(f)}
        for task in sorted({t for t, _, _ in chosen}):
            if (task, "vera", "") in chosen and (task, "lora", "") in chosen:
                vera, lora = chosen[task, "vera", ""], chosen[task, "lora", ""]
                lines.append(
                    f"- lr chosen on validation, {task} (`results/protocol/chosen_lr.csv`): VeRA {vera:g}, LoRA "
                    f"{lora:g} — a {vera / lora:.0f}× larger lr: the pipeline sees that VeRA needs one."
                )
    return lines


def provenance(reports_dir: Path) -> list[str]:
    """Per grid of committed reports: how many runs, from which commits, and how many from a tree
    with uncommitted changes (``git_dirty``) — rows a reader should know were not from a commit."""

    grids: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(reports_dir.glob("*.json")):
        report = json.loads(path.read_text())
        grids[report["config"].get("run_prefix", "").rstrip("_") or report["run_name"].split("_")[0]].append(report)
    lines = ["| grid | runs | commits | runs from a dirty tree | recorded command line |", "|---|---|---|---|---|"]
    for grid, reports in sorted(grids.items()):
        shas = sorted({(r["environment"].get("git_sha") or "?")[:7] for r in reports})
        dirty = sum(bool(r["environment"].get("git_dirty")) for r in reports)
        commands = sum("command" in r["environment"] for r in reports)
        lines.append(f"| {grid} | {len(reports)} | {', '.join(shas)} | {dirty} | {commands} |")
    return lines


def readme_block(plan: dict, outcomes: list[Outcome], present: int, planned: int, commit: str | None) -> str:
    """README's verdict lines: one per primary-rule comparison, with its interval, n and word."""
    primary = [o for o in outcomes if o.rule == plan["primary_rule"]]
    status = (
        "complete" if present >= planned else f"PARTIAL: {present} of {planned} confirmatory runs; words provisional"
    )
    lines = [
        f"Preregistered confirmatory study [`{plan['plan']}`](results/smalldata/PREREGISTRATION.md)"
        + (f" (plan committed in `{commit}`)" if commit else "")
        + f" — {status}. Score: test accuracy ×100 at the {RULES[plan['primary_rule']]}; paired by seed; "
        f"words at α = {plan['alpha']}, margin ±{plan['margin']}, Holm within each family "
        f"([table](results/smalldata/verdict.md)):",
        "",
    ]
    for o in primary:
        if o.word is None:
            lines.append(f"- *{o.a} − {o.b}* ({o.family}): not yet run (n = {o.n}).")
            continue
        lines.append(
            f"- *{o.a} − {o.b}* ({o.family}): {o.mean:+.2f} [{o.low:+.2f}, {o.high:+.2f}], n = {o.n}, "
            f"sign-flip p = {_p(o.p_diff_holm)} (Holm), could detect ≥ {o.mde:.2f} → **{o.word}**."
        )
    return "\n".join(lines)


def exploratory_block(outcomes: list[Outcome]) -> str:
    """README's exploratory lines: the plan's comparisons on seeds 1–5 at the best validation epoch
    (the only epoch whose test those runs scored), with the same statistics and no word."""
    lines = []
    for o in outcomes:
        if o.rule != "best" or o.mean is None:
            continue
        interval = f"[{o.low:+.2f}, {o.high:+.2f}]" if o.n >= MIN_INTERVAL_N else f"(n < {MIN_INTERVAL_N}: no interval)"
        lines.append(
            f"- *{o.a} − {o.b}*: {o.mean:+.2f} {interval}, n = {o.n}, sign-flip p = {_p(o.p_diff)}, "
            f"could detect ≥ {o.mde:.2f}."
        )
    return "\n".join(lines) if lines else "- (no exploratory runs)"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- {name} --> … <!-- /{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


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
    args = parser.parse_args(argv)
    plan = read_plan(args.plan)
    runs = arm_runs(args.reports, plan["grid"])
    outcomes = verdict(plan, runs)
    planned = sum(last - first + 1 for first, last in plan["seeds"].values())
    present = sum(
        sum(plan["seeds"][label][0] <= r["seed"] <= plan["seeds"][label][1] for r in reports)
        for label, reports in runs.items()
        if label in plan["seeds"]
    )
    lrs = {}
    arm_lr = args.out / "arm_lr.csv"
    if arm_lr.is_file():
        from scripts.grids.smalldata import read_arm_lr

        lrs = read_arm_lr(arm_lr)
    exploratory_runs = arm_runs(args.reports, FINAL_GRID)
    exploratory = []
    for rule in ("best", "final_size"):
        scores = arm_scores(exploratory_runs, rule, plan["scale"])
        for family in plan["families"]:
            exploratory += family_outcomes(family, rule, scores, plan)
    commit = plan_commit(args.plan)
    status = "complete" if present >= planned else f"**PARTIAL**: {present} of {planned} planned runs present"
    lines = [
        "<!-- generated by scripts/reports/smalldata_verdict.py from results/smalldata/plan.json and results/reports; do not edit -->",
        f"# Small-data suite: the verdict of plan `{plan['plan']}`",
        "",
        "Plan: [PREREGISTRATION.md](PREREGISTRATION.md) and [plan.json](plan.json)"
        + (f", committed in `{commit}`" if commit else "")
        + f". Status: {status}. Metric: {plan['unit']}; margin ±{plan['margin']}; α = {plan['alpha']}; "
        f"Holm within each family; words as the plan defines them.",
        "",
        "## Arms",
        "",
        *arm_table(plan, runs, lrs),
        "",
    ]
    for rule in [plan["primary_rule"], *[r for r in plan["rules"] if r != plan["primary_rule"]]]:
        tag = " (primary)" if rule == plan["primary_rule"] else ""
        lines += [
            f"## Score at the {RULES[rule]}{tag}",
            "",
            *outcome_table([o for o in outcomes if o.rule == rule]),
            "",
        ]
    lines += [
        "## Provenance of every committed report",
        "",
        "Runs from a dirty tree ran code that differed from their commit by what `git diff` showed then; "
        "reports before this plan kept no diff and no command line. The confirmatory grid refuses a dirty "
        "tree (`allow_dirty=true` overrides it, and each report then carries its diff).",
        "",
        *provenance(args.reports),
        "",
    ]
    lines += ["## Positive controls", "", *controls(plan, outcomes, args.out.parent / "protocol" / "chosen_lr.csv"), ""]
    lines += [
        "## Exploratory seeds 1–5 (the suite that suggested the plan), the same statistics, no words",
        "",
        "Their test was scored only at the best validation epoch, so the final-size rule has a score only "
        "where that epoch came after the last tie; n counts those seeds. With n ≤ 5 no sign-flip p can be "
        "below 0.0625.",
        "",
    ]
    for rule in ("best", "final_size"):
        lines += [f"**{RULES[rule]}**", "", *outcome_table([o for o in exploratory if o.rule == rule], words=False), ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "verdict.md").write_text("\n".join(lines))
    data = {
        "plan": plan["plan"],
        "plan_commit": commit,
        "runs_present": present,
        "runs_planned": planned,
        "outcomes": [asdict(o) for o in outcomes],
        "exploratory": [asdict(o) for o in exploratory],
    }
    (args.out / "verdict.json").write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {args.out / 'verdict.md'} and verdict.json ({present} of {planned} planned runs)")
    if args.readme:
        text = args.readme.read_text()
        text = replace_block(text, "verdict:smalldata", readme_block(plan, outcomes, present, planned, commit))
        args.readme.write_text(replace_block(text, "exploratory:smalldata", exploratory_block(exploratory)))
        print(f"filled {args.readme}'s verdict block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
