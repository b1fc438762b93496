"""What every page of the results site shares: a run's grid, arm and scored size read from its
report, the page frame, tables and plotly figures (see :mod:`scripts.reports.site`)."""

from __future__ import annotations

import html
from urllib.parse import quote

import plotly.graph_objects as go

from aslora.harness.measuring.metrics import LOWER_IS_BETTER
from aslora.harness.runs.report import variant_of

STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}code,pre{background:#f6f6f6;font-size:12px}pre{padding:8px;overflow:auto;max-height:420px}
.dirty{color:#b00}.muted{color:#777}.wide{overflow-x:auto;margin:0.5em 0}nav a{margin-right:1em}h1{overflow-wrap:anywhere;font-size:1.6em}"""


def arm_of(report: dict) -> str:
    """A run's arm as data: its adapter and every swept setting but the seed (``aslora · lr=0.003``).
    A report from before runs recorded their ``variant`` kept its swept settings in its name only: the
    adapter's are read back from it (:func:`aslora.harness.runs.report.variant_of`), and a swept lr
    from the config (without it, every lr of an lr grid would be one arm)."""
    variant = {k: v for k, v in variant_of(report).items() if k != "seed"}
    if "variant" not in report and "train.lr=" in report["run_name"]:
        variant["train.lr"] = report["config"]["train"]["lr"]
    short = {k.removeprefix("adapter.params.").removeprefix("train."): v for k, v in variant.items()}
    return " · ".join([report["adapter"], *(f"{k}={v}" for k, v in sorted(short.items()))])


def scored_size(report: dict) -> int:
    """Adapter parameters at the epoch the run was scored at (its best validation epoch)."""
    params = report["params"]
    return (params.get("at_best") or params["after"])["adapter"]


def scale(metric: str) -> int:
    """Accuracy-like metrics are shown ×100; a loss or perplexity (lower is better) as it is."""
    return 1 if metric in LOWER_IS_BETTER else 100


def metric_label(metric: str) -> str:
    return f"{metric}, lower is better" if metric in LOWER_IS_BETTER else f"{metric} ×100"


def score_text(metric: str, value: float | None) -> str:
    """An already-scaled score: one decimal ×100, three for a loss."""
    return fmt(value, 1 if scale(metric) == 100 else 3)


def val_score(report: dict) -> float:
    return scale(report["main_metric"]) * report["best"]["metric"]


def test_score(report: dict) -> float | None:
    test = report["best"].get("test") or {}
    value = test.get(report["main_metric"])
    return None if value is None else scale(report["main_metric"]) * value


# ---------------------------------------------------------------------------------------------- pages
def page(title: str, body: str, depth: int, plots: bool = False) -> str:
    up = "../" * depth
    script = f'<script src="{up}assets/plotly.min.js"></script>' if plots else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style>{script}</head><body>\n"
        f'<nav><a href="{up}index.html">ASLoRA results</a></nav>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n'
    )


def figure_html(figure: go.Figure, div_id: str) -> str:
    figure.update_layout(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40))
    if figure.layout.height is None:
        figure.update_layout(height=420)
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def table(header: list[str] | None, rows: list[list[str]], table_id: str = "") -> str:
    """An HTML table; cells are already-escaped HTML; ``header=None``: a table of facts, without a
    header row (an empty one shows as a blank grey bar)."""
    head = "" if header is None else "<thead><tr>" + "".join(f"<th>{h}</th>" for h in header) + "</tr></thead>"
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    # in a box that scrolls sideways: a wide table (long run names) never widens the page past the text
    return f'<div class="wide"><table{ident}>{head}<tbody>\n{body}\n</tbody></table></div>'


def run_link(report: dict, depth: int) -> str:
    name = report["run_name"]
    return f'<a href="{"../" * depth}runs/{quote(name)}.html">{html.escape(name)}</a>'


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def colour(index: int) -> str:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
    return palette[index % len(palette)]
