"""A grid's page of the results site: its arms (named as the small-data plan names them, where it
does), each arm's validation curve over seeds, and test score against adapter size.

An arm's curve is the mean over its seeds, epoch by epoch, inside a band from the lowest to the
highest seed; each seed is one click away in the legend (hidden at first: sixty overlaid seeds read
as one tangle, which is what the first version of this page drew). An arm of one run draws that run.
A grid over two tasks draws each task's arms in figures of their own. A figure of more than
:data:`SHOWN_ARMS` arms (the protocol's: six adapters at their chosen lr, ten ablation points) starts with
only the arms run at its full seed count drawn; the others are one click away in the legend.
"""

from __future__ import annotations

import html
import statistics
from urllib.parse import quote

import plotly.graph_objects as go

from aslora.harness.runs.report import grid_of
from scripts.grids.smalldata import ARMS, DEPTH_MODEL
from scripts.reports.site_html import (
    arm_of,
    colour,
    figure_html,
    metric_label,
    page,
    scale,
    score_text,
    scored_size,
    table,
    test_score,
    val_score,
)

PLAN_ORDER = {arm.label: i for i, arm in enumerate(ARMS)}
"""The small-data arms in the plan's order (LoRA r=8 first)."""
SHOWN_ARMS = 8
"""Above this many arms in one figure, the curves of arms with fewer seeds than the most start hidden:
sixteen overlapping bands hide every one of them (the protocol page's first version)."""
SMALLDATA_GRIDS = ("smalldata-lr", "smalldata", "smalldata-confirm", "smalldata-depth")
"""The grids whose runs are the small-data suite's arms (scripts/grids/smalldata.py: ARMS)."""


def plan_names(reports: list[dict]) -> dict[str, str]:
    """run name → the small-data arm it is an instance of (``ASLoRA, paper schedule``), for the runs
    of the small-data grids; an arm is known by what its command composes, as the verdict knows it
    (:func:`scripts.reports.smalldata_report.by_arm`), on either of the suite's models."""
    runs = [r for r in reports if grid_of(r) in SMALLDATA_GRIDS]
    if not runs:
        return {}
    from scripts.reports.smalldata_report import arm_identities, by_arm

    identities = {**arm_identities(), **arm_identities(ARMS[:3], (f"model={DEPTH_MODEL}",))}
    return {r["run_name"]: label for label, rs in by_arm(runs, identities).items() for r in rs}


def arm_name(report: dict, names: dict[str, str]) -> str:
    """The arm a run's row and curve belong to: the plan's name and the run's lr where the plan names
    it, else its adapter and swept settings (:func:`scripts.reports.site_html.arm_of`)."""
    label = names.get(report["run_name"])
    return f"{label} · lr={report['config']['train']['lr']:g}" if label else arm_of(report)


def _plan_order(report: dict, names: dict[str, str]) -> tuple:
    """Arms in the plan's order (LoRA r=8 first), then the others by name; within an arm by lr, then seed."""
    label = names.get(report["run_name"])
    return (
        PLAN_ORDER.get(label, len(PLAN_ORDER)),
        arm_of(report) if label is None else "",
        report["config"]["train"]["lr"],
        report["seed"],
    )


def _hidden(arms: dict[str, list[dict]]) -> set[str]:
    """The arms a figure lists but does not draw at first: in a figure of more than :data:`SHOWN_ARMS`
    arms, those run at fewer seeds than the most (an ablation's points beside the adapters' finals)."""
    most = max(len(runs) for runs in arms.values())
    return set() if len(arms) <= SHOWN_ARMS else {arm for arm, runs in arms.items() if len(runs) < most}


def _curves(arms: dict[str, list[dict]], metric: str) -> go.Figure:
    hidden = _hidden(arms)
    figure = go.Figure()
    for index, (arm, runs) in enumerate(arms.items()):
        shown = "legendonly" if arm in hidden else None
        line = colour(index)
        by_epoch: dict[int, list[float]] = {}
        for r in runs:
            for e in r["epochs"]:
                by_epoch.setdefault(e["epoch"], []).append(scale(metric) * e["val"][metric])
        epochs = sorted(by_epoch)
        mode = "lines" if len(epochs) > 5 else "lines+markers"  # a run of one or two epochs: its points
        if len(runs) > 1:
            low, high = [min(by_epoch[e]) for e in epochs], [max(by_epoch[e]) for e in epochs]
            figure.add_trace(  # the band: lowest seed forward, highest seed back, filled
                go.Scatter(
                    x=[*epochs, *epochs[::-1]],
                    y=[*low, *high[::-1]],
                    fill="toself",
                    fillcolor=line,
                    opacity=0.15,
                    line=dict(width=0),
                    hoverinfo="skip",
                    name="lowest–highest seed",
                    visible=shown,
                    legendgroup=arm,
                    legendgrouptitle_text=arm,
                )
            )
        figure.add_trace(
            go.Scatter(
                x=epochs,
                y=[statistics.fmean(by_epoch[e]) for e in epochs],
                mode=mode,
                name=f"mean of {len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0]['seed']}",
                visible=shown,
                legendgroup=arm,
                legendgrouptitle_text=arm,
                line=dict(color=line, width=3 if len(runs) > 1 else 2),
            )
        )
        if len(runs) > 1:
            for r in runs:
                figure.add_trace(
                    go.Scatter(
                        x=[e["epoch"] for e in r["epochs"]],
                        y=[scale(metric) * e["val"][metric] for e in r["epochs"]],
                        mode=mode,
                        name=f"seed {r['seed']}",
                        legendgroup=arm,
                        visible="legendonly",
                        line=dict(color=line, width=1),
                    )
                )
    # a fixed height: plotly scrolls a legend taller than the plot (an arm of 20 seeds lists 22 entries)
    figure.update_layout(title="validation score per epoch: mean over seeds, band from lowest to highest", height=640)
    last = max(e["epoch"] for runs in arms.values() for r in runs for e in r["epochs"])
    figure.update_xaxes(title="epoch", dtick=1 if last <= 10 else None)  # no epoch 1.2 on a two-epoch run
    figure.update_yaxes(title=f"validation {metric_label(metric)}")
    return figure


def _pareto(arms: dict[str, list[dict]], metric: str) -> go.Figure:
    figure = go.Figure()
    for index, (arm, runs) in enumerate(arms.items()):
        scored = [r for r in runs if test_score(r) is not None]
        figure.add_trace(
            go.Scatter(
                x=[scored_size(r) for r in scored],
                y=[test_score(r) for r in scored],
                mode="markers",
                name=arm,
                text=[f"seed {r['seed']}" for r in scored],
                marker=dict(color=colour(index), size=9),
            )
        )
    figure.update_layout(
        title="test score at the best validation epoch against adapter size at that epoch",
        legend=dict(orientation="h", yanchor="top", y=-0.25),
        height=420 + 22 * len(arms),
    )
    figure.update_xaxes(title="adapter parameters at the scored epoch", type="log")
    figure.update_yaxes(title=f"test {metric_label(metric)}")
    return figure


def grid_page(grid: str, reports: list[dict], names: dict[str, str]) -> str:
    """``names``: :func:`plan_names` of the runs (an empty mapping names every arm by its settings).

    A grid over several models or tasks (the protocol's) gets one pair of figures per model and task:
    scores on two datasets share no axis, and 32 arms in one legend read as a tangle.
    """
    metric = reports[0]["main_metric"]  # a grid's tasks share one metric (classification, or a loss)
    places: dict[str, dict[str, list[dict]]] = {}  # "model · task" → arm → its runs
    for r in sorted(reports, key=lambda r: (r["model"], r["task"], _plan_order(r, names))):
        places.setdefault(f"{r['model']} · {r['task']}", {}).setdefault(arm_name(r, names), []).append(r)
    several = len(places) > 1  # then an arm is named with its model and task, and each pair gets its figures
    crowded = any(_hidden(arms) for arms in places.values())
    rows = []
    for place, arms in places.items():
        for arm, runs in arms.items():
            tests = [t for t in (test_score(r) for r in runs) if t is not None]
            settings = arm_of(runs[0])
            rows.append(
                [
                    html.escape(f"{place} · {arm}" if several else arm)
                    + ("" if arm.endswith(settings) else f'<br><small class="muted">{html.escape(settings)}</small>'),
                    str(len(runs)),
                    f"{statistics.median(scored_size(r) for r in runs):,.0f}",
                    score_text(metric, statistics.median(val_score(r) for r in runs)),
                    "–"
                    if not tests
                    else f"{score_text(metric, statistics.median(tests))} ({score_text(metric, min(tests))}–"
                    f"{score_text(metric, max(tests))}, n={len(tests)})",
                    " ".join(f'<a href="../runs/{quote(r["run_name"])}.html">s{r["seed"]}</a>' for r in runs),
                ]
            )
    verdict = (
        ' The plan\'s scoring rules and their verdict: <a href="../index.html">the results page</a>.'
        if grid == "smalldata-confirm"
        else ""
    )
    figures = ""
    for index, (place, arms) in enumerate(places.items()):
        suffix = f"-{index + 1}" if several else ""
        figures += (f"<h2>{html.escape(place)}</h2>" if several else "") + (
            figure_html(_curves(arms, metric), f"curves{suffix}")
            + figure_html(_pareto(arms, metric), f"pareto{suffix}")
        )
    body = (
        f"<p>{len(reports)} runs in {len(rows)} arms"
        + (f" on {len(places)} model–task pairs, each with its own figures below" if several else "")
        + f". Scores ({html.escape(metric_label(metric))}) at each run's best validation epoch; "
        f"size is the adapter's at that epoch.{verdict} In the curves, click a seed in the legend to show "
        f"it, double-click an entry to show it alone"
        + (
            f"; where a figure has more than {SHOWN_ARMS} arms, those run at fewer seeds than the most "
            "(ablations) start hidden, one click away"
            if crowded
            else ""
        )
        + ".</p>"
        + table(["arm", "runs", "size at score (median)", "val (median)", "test (median, range, n)", "runs"], rows)
        + figures
    )
    return page(f"Grid {grid}", body, 1, plots=True)
