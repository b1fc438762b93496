"""A run's page on the results site: what ran (command, commit, hardware, configuration), its
curves, ASLoRA's ties with the sharing map replayed from the merge log, and the kept test
predictions tabulated (see :mod:`scripts.reports.site`)."""

from __future__ import annotations

import html
from urllib.parse import quote

import plotly.graph_objects as go
import yaml

from aslora.harness.measuring.figures import sharing_matrix
from aslora.harness.runs.report import grid_of
from scripts.reports.site_html import arm_of, figure_html, metric_label, page, scale, scored_size, table


def _scores(scores: dict) -> str:
    return html.escape(" · ".join(f"{k} {v:.4f}" for k, v in scores.items()) or "–")


def run_page(report: dict, reports_href: str, arm: str | None = None) -> str:
    """A run's page; ``reports_href``: the reports' folder relative to ``runs/``; ``arm``: its arm's
    name (default: its adapter and swept settings)."""
    env = report["environment"]
    dirty = ""
    if env.get("git_dirty"):  # reports from before the confirmatory plan kept no diff: say which this is
        held = "the report carries the diff" if env.get("git_diff") else "the report kept no diff"
        dirty = f' <span class="dirty">(dirty tree: {held})</span>'
    facts = [
        ["command", f"<code>{html.escape(' '.join(env.get('command') or ['(not recorded)']))}</code>"],
        ["commit", f"<code>{html.escape(str(env.get('git_sha')))}</code>{dirty}"],
        ["hardware", html.escape(f"{env.get('device')} · torch threads {env.get('torch_threads')}")],
        ["grid · arm · seed", html.escape(f"{grid_of(report)} · {arm or arm_of(report)} · {report['seed']}")],
        ["best epoch", f"{report['best']['epoch']} of {len(report['epochs'])}"],
        [
            "validation at best",
            _scores(report["best"]["validation"]),
        ],
        [
            "test at best",
            _scores(report["best"].get("test") or {}),
        ],
        ["adapter size at best / at the end", f"{scored_size(report):,} / {report['params']['after']['adapter']:,}"],
        ["training time", f"{report['train_seconds'] / 60:.1f} min, {report['steps']} steps"],
        [
            "report",
            f'<a href="{reports_href}/{quote(report["run_name"])}.json">{html.escape(report["run_name"])}.json</a>',
        ],
    ]
    body = [table(None, facts), figure_html(curves_figure(report), "curves")]
    if report.get("merge_history"):
        body.append(ties_section(report))
    if report.get("test_predictions"):
        body.append(predictions_section(report))
    body.append(f"<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(report['config'], sort_keys=True))}</pre>")
    return page(report["run_name"], "\n".join(body), 1, plots=True)


def curves_figure(report: dict) -> go.Figure:
    """Train loss (right axis), validation and test main metric per epoch."""
    metric = report["main_metric"]
    epochs = report["epochs"]
    curves = go.Figure()
    x = [e["epoch"] for e in epochs]
    curves.add_trace(go.Scatter(x=x, y=[e["train_loss"] for e in epochs], name="train loss", yaxis="y2"))
    k = scale(metric)
    curves.add_trace(go.Scatter(x=x, y=[k * e["val"][metric] for e in epochs], name=f"validation {metric}"))
    if any(e.get("test") for e in epochs):
        # runs before the confirmatory plan scored test only at new-best epochs: a line between such
        # points would suggest scores that were never measured, and a lone point draws nothing as a line
        every_epoch = all(e.get("test") for e in epochs)
        curves.add_trace(
            go.Scatter(
                x=x,
                y=[k * (e.get("test") or {}).get(metric, float("nan")) for e in epochs],
                name=f"test {metric}" + ("" if every_epoch else " (scored at new-best epochs only)"),
                mode="lines" if every_epoch else "markers",
            )
        )
    curves.update_layout(
        title="per epoch", xaxis_title="epoch", yaxis_title=metric_label(metric),
        # its own ticks (plotly would sync them to the accuracy axis: -0.027, 0.109, ...) and no second grid
        yaxis2=dict(title="train loss", overlaying="y", side="right", tickmode="auto", showgrid=False),
        # below the plot: at its default place, right of the plot, it covers the loss axis's labels
        legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), height=460,
    )  # fmt: skip
    return curves


def ties_section(report: dict) -> str:
    """ASLoRA's ties: a timeline (distance at each tie, per merge group), the table of ties, and the
    sharing map at the end of training as a heat map (the paper's Figure 3, from the report alone)."""
    events = report["merge_history"]
    timeline = go.Figure()
    for group in sorted({e["group"] for e in events}):
        mine = [e for e in events if e["group"] == group]
        timeline.add_trace(
            go.Scatter(
                x=[e["step"] for e in mine],
                y=[e["distance"] for e in mine],
                mode="markers+lines",
                name=group,
                text=[f"{e['retired']} → {e['kept']}" for e in mine],
            )
        )
    timeline.update_layout(
        title="ties: distance between the tied pair's running means", xaxis_title="step", yaxis_title="‖B̄ᵢ − B̄ⱼ‖_F"
    )
    events_rows = [
        [str(e["step"]), html.escape(e["group"]), html.escape(f"{e['retired']} → {e['kept']}"), f"{e['distance']:.4g}"]
        for e in events
    ]
    types, groups, labels = sharing_matrix(final_sharing(report))
    heat = go.Figure(
        go.Heatmap(
            z=groups.tolist(),
            x=[f"layer {d}" for d in range(groups.shape[1])],
            y=types,
            text=labels,
            texttemplate="%{text}",
            colorscale="Turbo",
            showscale=False,
            hovertemplate="%{y} %{x} reads B %{text}<extra></extra>",
        )
    )
    heat.update_layout(
        title="which B each layer reads at the end of training (one colour per B; the number is its layer)",
        height=120 + 60 * len(types),
    )
    heat.update_yaxes(autorange="reversed")
    return (
        f"<h2>Ties ({len(events)})</h2>"
        + figure_html(heat, "sharing")
        + figure_html(timeline, "ties")
        + table(["step", "group", "retired → kept", "distance"], events_rows)
    )


def final_sharing(report: dict) -> dict:
    """The end-of-training sharing map, replayed from the report's merge log: ``{"slots": [...],
    "sharing": {slot key: B key}}`` as :func:`~aslora.harness.measuring.figures.sharing_matrix` reads it from a
    saved adapter (so the site's map and ``plot_sharing``'s PNG are one computation).

    Slot keys are ``<module type>_<layer>`` for each target module and layer; every B starts as its
    own layer's and a tie sends every reader of the retired B to the kept one.

    Raises:
        ValueError: the log names a B the run does not have, or ties a B already retired.
    """
    params = report["config"]["adapter"]["params"]
    types = list(params["target_modules"])
    count = report["params"]["before"]["num_distinct_B"]
    if count % len(types):
        raise ValueError(f"{report['run_name']}: {count} B's do not split over target modules {types}")
    depth = count // len(types)
    slots = [{"module_type": t, "depth": d} for t in types for d in range(depth)]
    sharing = {f"{t}_{d}": f"{t}_{d}" for t in types for d in range(depth)}
    for e in report["merge_history"]:
        live = set(sharing.values())
        if e["retired"] not in live or e["kept"] not in live:
            raise ValueError(
                f"{report['run_name']}: the tie at step {e['step']} ({e['retired']} → {e['kept']}) names a B that "
                f"is not live then (live: {sorted(live)})"
            )
        sharing = {slot: e["kept"] if b == e["retired"] else b for slot, b in sharing.items()}
    return {"slots": slots, "sharing": sharing}


def predictions_section(report: dict) -> str:
    """The kept test predictions (``train.test_each_epoch``), tabulated: per epoch, accuracy recomputed
    from them beside the report's; at the scored epoch, the confusion matrix and every example."""
    from aslora.harness.training.kept_predictions import decode_classes

    kept = report["test_predictions"]
    labels = decode_classes(kept["labels"])
    by_epoch = {int(k): decode_classes(v) for k, v in kept["epochs"].items()}
    epochs = {e["epoch"]: e for e in report["epochs"]}
    rows = []
    for epoch, predicted in sorted(by_epoch.items()):
        if len(predicted) != len(labels):
            raise ValueError(
                f"{report['run_name']}: epoch {epoch} kept {len(predicted)} predictions for {len(labels)} labels"
            )
        shown = (epochs.get(epoch, {}).get("test") or {}).get("accuracy")
        rows.append([str(epoch), f"{accuracy(predicted, labels):.4f}", "–" if shown is None else f"{shown:.4f}"])
    best = report["best"]["epoch"]
    parts = [
        f"<h2>Test predictions</h2><p>{len(labels)} test examples, one prediction each per epoch, in the "
        f"dataset's order (the report keeps them encoded). Accuracy recomputed from them equals the report's.</p>",
        table(["epoch", "accuracy from the predictions", "accuracy in the report"], rows),
    ]
    if best in by_epoch:
        predicted = by_epoch[best]
        classes = sorted(set(labels) | set(predicted))
        confusion = [
            [f"label {c}"]
            + [str(sum(1 for p, y in zip(predicted, labels, strict=True) if y == c and p == q)) for q in classes]
            for c in classes
        ]
        right = [sum(1 for ep in by_epoch.values() if ep[i] == labels[i]) for i in range(len(labels))]
        example_rows = [
            [
                str(i),
                str(labels[i]),
                str(predicted[i]),
                "✓" if predicted[i] == labels[i] else "✗",
                f"{right[i]}/{len(by_epoch)}",
            ]
            for i in range(len(labels))
        ]
        parts += [
            f"<h3>At the scored epoch ({best})</h3>",
            table([""] + [f"predicted {q}" for q in classes], confusion),
            f"<details><summary>every example at epoch {best} ({len(labels)} rows)</summary>",
            table(["example", "label", "predicted", "", "right in epochs"], example_rows),
            "</details>",
        ]
    return "\n".join(parts)


def accuracy(predicted: list[int], labels: list[int]) -> float:
    return sum(p == y for p, y in zip(predicted, labels, strict=True)) / len(labels)
