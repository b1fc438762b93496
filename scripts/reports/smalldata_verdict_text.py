"""The small-data verdict on the page: ``verdict.md`` (the arms, each rule's comparisons with their
words, the provenance of every committed report, the positive controls, the exploratory seeds) and
README's generated blocks, from the outcomes :mod:`scripts.reports.smalldata_outcomes` computes.
Every number is formatted here from those outcomes; nothing is typed.
"""

from __future__ import annotations

import csv
import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from aslora.harness.runs.report import grid_of
from scripts.grids.smalldata import ARMS
from scripts.reports.smalldata_outcomes import (
    RULES,
    Outcome,
    planned_pairs,
    primary_family,
    rule_order,
    score,
    untested,
)
from scripts.reports.stats import MIN_INTERVAL_N, format_differences


def _num(x: float | None, digits: int = 2, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.{digits}f}" if signed else f"{x:.{digits}f}"


def p_text(x: float | None) -> str:
    """A p-value as every page shows it: three decimals, "<0.001" below that, "—" where untested."""
    return "—" if x is None else (f"{x:.3f}" if x >= 0.001 else "<0.001")


def interval_text(o: Outcome) -> str:
    """A comparison's mean and 95 % t-interval as every page shows it; below ``MIN_INTERVAL_N`` paired
    seeds the mean and the seeds' own differences instead (an interval from so few seeds is shown
    nowhere), and the reason where untested."""
    if o.mean is None:
        return untested(o.n)
    if o.n < MIN_INTERVAL_N:
        return f"{o.mean:+.2f} (n < {MIN_INTERVAL_N}: no interval; per seed {format_differences(o.differences)})"
    return f"{o.mean:+.2f} [{o.low:+.2f}, {o.high:+.2f}]"


def outcome_table(outcomes: list[Outcome], words: bool = True) -> list[str]:
    head = "| family | A − B | n | mean [95 % t-interval] | sign-flip p (Holm) | TOST p (Holm) | MDE (80 %) |"
    lines = [head + (" word |" if words else ""), "|---" * (7 + words) + "|"]
    for o in outcomes:
        cells = [
            o.family,
            f"{o.a} − {o.b}",
            str(o.n),
            "—" if o.mean is None else interval_text(o),
            f"{p_text(o.p_diff)} ({p_text(o.p_diff_holm)})",
            f"{p_text(o.p_eq)} ({p_text(o.p_eq_holm)})",
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
                untested(o.n)
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
        grids[grid_of(report)].append(report)
    lines = ["| grid | runs | commits | runs from a dirty tree | recorded command line |", "|---|---|---|---|---|"]
    for grid, reports in sorted(grids.items()):
        shas = sorted({(r["environment"].get("git_sha") or "?")[:7] for r in reports})
        dirty = sum(bool(r["environment"].get("git_dirty")) for r in reports)
        commands = sum("command" in r["environment"] for r in reports)
        lines.append(f"| {grid} | {len(reports)} | {', '.join(shas)} | {dirty} | {commands} |")
    return lines


def status_phrase(present: int, planned: int) -> str:
    """The study's state as README's block, verdict.md, the figure and the site give it."""
    if present >= planned:
        return f"complete: all {planned} confirmatory runs in; words final"
    return f"PARTIAL: {present} of {planned} confirmatory runs; words provisional"


def readme_block(plan: dict, outcomes: list[Outcome], present: int, planned: int, commit: str | None) -> str:
    """README's verdict lines: one per primary-rule comparison, with its interval, n and word."""
    primary = [o for o in outcomes if o.rule == plan["primary_rule"]]
    status = status_phrase(present, planned)
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
            lines.append(f"- *{o.a} − {o.b}* ({o.family}): {untested(o.n)}.")
            continue
        lines.append(
            f"- *{o.a} − {o.b}* ({o.family}): {interval_text(o)}, "
            f"n = {o.n} of {planned_pairs(plan, o.a, o.b)} planned, "
            f"sign-flip p = {p_text(o.p_diff_holm)} (Holm), could detect ≥ {o.mde:.2f} → **{o.word}**."
        )
    return "\n".join(lines)


def headline(plan: dict, outcomes: list[Outcome], present: int, planned: int) -> str:
    """README's opening answer for the paper's regime: the plan's words for its primary family under its
    primary rule, with how many runs they rest on (the words change with the reports, never by hand)."""
    family = primary_family(plan)["name"]
    rows = [o for o in outcomes if o.rule == plan["primary_rule"] and o.family == family]
    state = status_phrase(present, planned)
    if not rows or any(o.word is None for o in rows):
        return f"In the paper's own small-data regime, the preregistered test is under way ({state})."
    words = "; ".join(f"*{o.a}* − *{o.b}*: **{o.word}**" for o in rows)
    return (
        f"In the paper's own small-data regime, the preregistered test ({state}) gives, in the words its plan "
        f"fixed before the runs: {words}."
    )


def exploratory_block(outcomes: list[Outcome]) -> str:
    """README's exploratory lines: the plan's comparisons on seeds 1–5 at the best validation epoch
    (the only epoch whose test those runs scored), with the same statistics and no word."""
    lines = []
    for o in outcomes:
        if o.rule != "best" or o.mean is None:
            continue
        lines.append(
            f"- *{o.a} − {o.b}*: {interval_text(o)}, n = {o.n}, sign-flip p = {p_text(o.p_diff)}, "
            f"could detect ≥ {o.mde:.2f}."
        )
    return "\n".join(lines) if lines else "- (no exploratory runs)"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"README has no <!-- {name} --> … <!-- /{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def verdict_markdown(
    plan: dict,
    runs: dict[str, list[dict]],
    lrs: dict[str, float],
    outcomes: list[Outcome],
    exploratory: list[Outcome],
    counts: tuple[int, int],
    commit: str | None,
    reports_dir: Path,
    protocol_lrs: Path,
) -> str:
    """``verdict.md``: the plan and its status, the arms, each rule's comparisons (the primary rule
    first), the provenance of every committed report, the positive controls, the exploratory seeds."""
    present, planned = counts
    status = f"**{status_phrase(present, planned)}**"  # the words README's block, the figure and the site use
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
    for rule in rule_order(plan):
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
        *provenance(reports_dir),
        "",
    ]
    lines += ["## Positive controls", "", *controls(plan, outcomes, protocol_lrs), ""]
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
    return "\n".join(lines)
