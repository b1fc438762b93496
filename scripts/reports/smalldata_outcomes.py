"""The small-data verdict's arithmetic, as the plan (``results/smalldata/plan.json``) fixes it: which
epoch each score rule scores a run at and the adapter's size there, each family's comparisons tested
on seed-paired scores (t-interval, exact sign-flip p, TOST at the plan's margin, Holm within the
family, the minimal detectable effect) and the word :func:`decide` assigns. No formatting here:
:mod:`scripts.reports.smalldata_verdict_text` writes it, :mod:`scripts.reports.smalldata_verdict`
is the command.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aslora.harness.runs.report import adapter_size
from scripts.grids.smalldata import ARMS, FINAL_GRID
from scripts.reports.smalldata_report import arm_identities, by_arm, read_reports
from scripts.reports.stats import holm, mde, paired, tost

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


def rule_order(plan: dict) -> list[str]:
    """The plan's score rules, its primary rule first: the order every page and table lists them in."""
    return [plan["primary_rule"], *[r for r in plan["rules"] if r != plan["primary_rule"]]]


def primary_family(plan: dict) -> dict:
    """The plan's primary family: its first (PREREGISTRATION.md lists the primary comparisons first)."""
    return plan["families"][0]


# --- which epoch a run is scored at ---------------------------------------------------------------
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
    differences: tuple[float, ...] = ()
    """The per-seed differences ``a − b`` in seed order: what a page shows instead of an interval
    below ``MIN_INTERVAL_N`` seeds, where a t-interval from so few would say little."""


def planned_pairs(plan: dict, a: str, b: str) -> int:
    """The seeds the plan runs in both arms ``a`` and ``b``: a comparison's n once its runs are all in."""
    (a_first, a_last), (b_first, b_last) = plan["seeds"][a], plan["seeds"][b]
    return max(0, min(a_last, b_last) - max(a_first, b_first) + 1)


def untested(n: int) -> str:
    """What a comparison without a test says: no paired seed yet, or too few (one) to test."""
    return "not yet run" if n == 0 else f"{n} paired seed: too few to test" if n == 1 else f"n = {n}"


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
                result.differences,
            )
        )
    return outcomes


# --- reading the runs -----------------------------------------------------------------------------
def arm_runs(reports_dir: Path, grid: str) -> dict[str, list[dict]]:
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
    for rule in rule_order(plan):
        scores = arm_scores(runs, rule, plan["scale"], plan["seeds"])
        for family in plan["families"]:
            outcomes += family_outcomes(family, rule, scores, plan)
    return outcomes


def exploratory(plan: dict, reports_dir: Path) -> list[Outcome]:
    """The plan's comparisons on the exploratory seeds 1–5 (the suite that suggested the plan), at
    the best validation epoch and at the final size: the same statistics, reported without words."""
    runs = arm_runs(reports_dir, FINAL_GRID)
    outcomes = []
    for rule in ("best", "final_size"):
        scores = arm_scores(runs, rule, plan["scale"])
        for family in plan["families"]:
            outcomes += family_outcomes(family, rule, scores, plan)
    return outcomes


def run_counts(plan: dict, runs: dict[str, list[dict]]) -> tuple[int, int]:
    """(runs present, runs planned): the runs within each arm's planned seed range."""
    planned = sum(last - first + 1 for first, last in plan["seeds"].values())
    present = sum(
        sum(plan["seeds"][label][0] <= r["seed"] <= plan["seeds"][label][1] for r in reports)
        for label, reports in runs.items()
        if label in plan["seeds"]
    )
    return present, planned
