"""The results as a static site a reader opens offline: ``make site`` → ``results/site/``.

    python -m scripts.site [--reports results/reports] [--verdict results/smalldata/verdict.json] [--out results/site]

Built only from committed inputs — the runs' reports (``results/reports/<run>.json``) and the
small-data plan's outcomes (``results/smalldata/verdict.json``) — so it regenerates byte for byte
(no timestamps, sorted everywhere, fixed plot ids). Pages:

* ``index.html`` — the plan's claims with interval, n and word, each linked to the grid behind it;
  the grids; a filterable table of every run (grid, model, task, adapter, arm, seed, lr, score, size, time);
* ``grids/<grid>.html`` — the arms table; validation curves, one trace per run (click a legend
  entry to hide or show that seed); test score against adapter size at the scored epoch;
* ``runs/<run>.html`` — command line, commit (and whether the tree was dirty), hardware, config,
  curves, ASLoRA's ties (timeline and which B each tied layer reads at the end), kept test
  predictions, and a link to the report itself.

Plots are plotly's, with ``plotly.min.js`` copied once beside the pages (no network at view time);
the only hand-written JavaScript is the run table's filter box.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import shutil
import statistics
from pathlib import Path
from urllib.parse import quote

import plotly.graph_objects as go
import yaml

ROOT = Path(__file__).resolve().parents[1]
STYLE = """body{font:15px/1.45 system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:left}
th{background:#f3f3f3}code,pre{background:#f6f6f6;font-size:12px}pre{padding:8px;overflow:auto;max-height:420px}
.dirty{color:#b00}nav a{margin-right:1em}"""
FILTER_JS = """<script>
function filterRuns(q){q=q.toLowerCase();for(const tr of document.querySelectorAll('#runs tbody tr'))
tr.style.display=tr.textContent.toLowerCase().includes(q)?'':'none';}
</script>"""


def grid_of(report: dict) -> str:
    """The grid a run belongs to: its config's ``run_prefix`` (``single`` for a lone run)."""
    return (report["config"].get("run_prefix") or "").rstrip("_") or "single"


def arm_of(report: dict) -> str:
    """A run's arm as data: its adapter and every swept setting but the seed (``aslora · train.lr=0.003``)."""
    variant = {k: v for k, v in (report.get("variant") or {}).items() if k != "seed"}
    short = {k.removeprefix("adapter.params.").removeprefix("train."): v for k, v in variant.items()}
    return " · ".join([report["adapter"], *(f"{k}={v}" for k, v in sorted(short.items()))])


def scored_size(report: dict) -> int:
    """Adapter parameters at the epoch the run was scored at (its best validation epoch)."""
    params = report["params"]
    return (params.get("at_best") or params["after"])["adapter"]


def test_score(report: dict) -> float | None:
    test = report["best"].get("test") or {}
    value = test.get(report["main_metric"])
    return None if value is None else 100 * value


def read_reports(directory: Path) -> list[dict]:
    from aslora.harness.report import load_report

    return sorted((load_report(p) for p in directory.glob("*.json")), key=lambda r: r["run_name"])


# ---------------------------------------------------------------------------------------------- pages
def page(title: str, body: str, depth: int, plots: bool = False) -> str:
    up = "../" * depth
    script = f'<script src="{up}assets/plotly.min.js"></script>' if plots else ""
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style>{script}</head><body>\n"
        f'<nav><a href="{up}index.html">ASLoRA results</a></nav>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n'
    )


def figure_html(figure: go.Figure, div_id: str) -> str:
    figure.update_layout(template="plotly_white", margin=dict(l=50, r=20, t=40, b=40))
    if figure.layout.height is None:
        figure.update_layout(height=420)
    return figure.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config={"displaylogo": False})


def table(header: list[str], rows: list[list[str]], table_id: str = "") -> str:
    """An HTML table; cells are already-escaped HTML."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "\n".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


def run_link(report: dict, depth: int) -> str:
    name = report["run_name"]
    return f'<a href="{"../" * depth}runs/{quote(name)}.html">{html.escape(name)}</a>'


def _fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def index_page(reports: list[dict], verdict: dict | None) -> str:
    parts = []
    if verdict:
        status = (
            "complete"
            if verdict["runs_present"] >= verdict["runs_planned"]
            else f"PARTIAL: {verdict['runs_present']} of {verdict['runs_planned']} planned runs present"
        )
        parts.append(
            f"<h2>The verdict: plan <code>{html.escape(verdict['plan'])}</code> ({status})</h2>"
            f"<p>Differences in test accuracy ×100, paired by seed: mean with its t-interval, n, Holm-adjusted "
            f"sign-flip p, the smallest difference the design could detect (80 % power) and the word the plan "
            f"assigns, under each scoring rule (best validation epoch; best at the adapter's final size; last "
            f"epoch). Plan committed in <code>{html.escape(str(verdict.get('plan_commit')))}</code>; the runs are "
            f'those of the <a href="grids/smalldata-confirm.html">smalldata-confirm</a> grid.</p>'
            + _outcomes(verdict["outcomes"])
        )
        if verdict.get("exploratory"):
            parts.append(
                "<h3>The same comparisons on the exploratory runs (seeds 1–5, before the plan)</h3>"
                '<p>From the <a href="grids/smalldata.html">smalldata</a> grid; exploratory, not the verdict.</p>'
                + _outcomes(verdict["exploratory"])
            )
    grids: dict[str, list[dict]] = {}
    for r in reports:
        grids.setdefault(grid_of(r), []).append(r)
    parts.append(
        "<h2>Grids</h2><ul>"
        + "".join(
            f'<li><a href="grids/{quote(g)}.html">{html.escape(g)}</a> ({len(rs)} runs)</li>' for g, rs in grids.items()
        )
        + "</ul>"
    )
    rows = [
        [
            html.escape(grid_of(r)),
            html.escape(r["model"]),
            html.escape(r["task"]),
            html.escape(r["adapter"]),
            html.escape(arm_of(r)),
            str(r["seed"]),
            f"{r['config']['train']['lr']:g}",
            f"{100 * r['best']['metric']:.1f}",
            _fmt(test_score(r)),
            f"{scored_size(r):,}",
            f"{r['train_seconds'] / 60:.1f}",
            run_link(r, 0),
        ]
        for r in reports
    ]
    parts.append(
        f"<h2>Every run ({len(reports)})</h2>"
        '<p><input id="q" placeholder="filter: any text in a row" oninput="filterRuns(this.value)" size="40"></p>'
        + table(
            [
                "grid",
                "model",
                "task",
                "adapter",
                "arm",
                "seed",
                "lr",
                "val ×100",
                "test ×100",
                "size at score",
                "min",
                "run",
            ],
            rows,
            "runs",
        )
        + FILTER_JS
    )
    return page("ASLoRA reproduction: results", "\n".join(parts), 0)


def _outcomes(outcomes: list[dict]) -> str:
    rows = [
        [
            html.escape(o["family"]),
            html.escape(o["rule"]),
            html.escape(f"{o['a']} − {o['b']}"),
            html.escape(o.get("claim", "")),
            "not yet run" if o["mean"] is None else f"{o['mean']:+.2f} [{o['low']:+.2f}, {o['high']:+.2f}]",
            str(o["n"]),
            "–" if o.get("p_diff_holm") is None else f"{o['p_diff_holm']:.3g}",
            "–" if o.get("mde") is None else f"{o['mde']:.2f}",
            f"<b>{html.escape(o['word'] or '–')}</b>",
        ]
        for o in sorted(outcomes, key=lambda o: (o["rule"] != "final_size", o["rule"]))
    ]
    header = ["family", "rule", "comparison", "claim", "mean [95 % CI]", "n", "p (Holm)", "detectable", "word"]
    return table(header, rows)


def grid_page(grid: str, reports: list[dict]) -> str:
    arms: dict[str, list[dict]] = {}
    for r in reports:
        arms.setdefault(arm_of(r), []).append(r)
    rows = []
    for arm, rs in arms.items():
        tests = [t for t in (test_score(r) for r in rs) if t is not None]
        rows.append(
            [
                html.escape(arm),
                str(len(rs)),
                f"{statistics.median(scored_size(r) for r in rs):,.0f}",
                f"{statistics.median(100 * r['best']['metric'] for r in rs):.1f}",
                "–"
                if not tests
                else f"{statistics.median(tests):.1f} ({min(tests):.1f}–{max(tests):.1f}, n={len(tests)})",
                " ".join(f'<a href="../runs/{quote(r["run_name"])}.html">s{r["seed"]}</a>' for r in rs),
            ]
        )
    curves = go.Figure()
    for arm_index, (arm, rs) in enumerate(arms.items()):
        for r in rs:
            curves.add_trace(
                go.Scatter(
                    x=[e["epoch"] for e in r["epochs"]],
                    y=[100 * e["val"][r["main_metric"]] for e in r["epochs"]],
                    mode="lines",
                    name=f"seed {r['seed']}",
                    legendgroup=arm,
                    legendgrouptitle_text=arm,
                    line=dict(color=_colour(arm_index)),
                )
            )
    curves.update_layout(
        title="validation score per epoch (click a seed to hide or show it; double-click to isolate)",
        height=max(420, 60 + 22 * (len(reports) + len(arms))),
    )
    curves.update_xaxes(title="epoch")
    curves.update_yaxes(title=f"validation {reports[0]['main_metric']} ×100")
    pareto = go.Figure()
    for arm_index, (arm, rs) in enumerate(arms.items()):
        scored = [r for r in rs if test_score(r) is not None]
        pareto.add_trace(
            go.Scatter(
                x=[scored_size(r) for r in scored],
                y=[test_score(r) for r in scored],
                mode="markers",
                name=arm,
                text=[f"seed {r['seed']}" for r in scored],
                marker=dict(color=_colour(arm_index), size=9),
            )
        )
    pareto.update_layout(title="test score at the best validation epoch against adapter size at that epoch")
    pareto.update_xaxes(title="adapter parameters at the scored epoch", type="log")
    pareto.update_yaxes(title=f"test {reports[0]['main_metric']} ×100")
    body = (
        f"<p>{len(reports)} runs in {len(arms)} arms. Scores ×100 at each run's best validation epoch; "
        f"size is the adapter's at that epoch.</p>"
        + table(["arm", "runs", "size at score (median)", "val (median)", "test (median, range, n)", "runs"], rows)
        + figure_html(curves, "curves")
        + figure_html(pareto, "pareto")
    )
    return page(f"Grid {grid}", body, 1, plots=True)


def _scores(scores: dict) -> str:
    return html.escape(" · ".join(f"{k} {v:.4f}" for k, v in scores.items()) or "–")


def run_page(report: dict, reports_href: str) -> str:
    """A run's page; ``reports_href``: the reports' folder relative to ``runs/``."""
    env = report["environment"]
    metric = report["main_metric"]
    dirty = ' <span class="dirty">(dirty tree: the report carries the diff)</span>' if env.get("git_dirty") else ""
    facts = [
        ["command", f"<code>{html.escape(' '.join(env.get('command') or ['(not recorded)']))}</code>"],
        ["commit", f"<code>{html.escape(str(env.get('git_sha')))}</code>{dirty}"],
        ["hardware", html.escape(f"{env.get('device')} · torch threads {env.get('torch_threads')}")],
        ["grid · arm · seed", html.escape(f"{grid_of(report)} · {arm_of(report)} · {report['seed']}")],
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
    epochs = report["epochs"]
    curves = go.Figure()
    x = [e["epoch"] for e in epochs]
    curves.add_trace(go.Scatter(x=x, y=[e["train_loss"] for e in epochs], name="train loss", yaxis="y2"))
    curves.add_trace(go.Scatter(x=x, y=[100 * e["val"][metric] for e in epochs], name=f"validation {metric}"))
    if any(e.get("test") for e in epochs):
        curves.add_trace(
            go.Scatter(
                x=x, y=[100 * (e.get("test") or {}).get(metric, float("nan")) for e in epochs], name=f"test {metric}"
            )
        )
    curves.update_layout(
        title="per epoch", xaxis_title="epoch", yaxis_title=f"{metric} ×100",
        yaxis2=dict(title="train loss", overlaying="y", side="right"),
    )  # fmt: skip
    body = [table(["", ""], facts), figure_html(curves, "curves")]
    if report.get("merge_history"):
        body.append(_ties(report))
    predictions = report.get("test_predictions")
    if predictions:
        body.append(
            f"<h2>Test predictions</h2><p>Kept per example (dataset order) for "
            f"{html.escape(', '.join(sorted(predictions)) if isinstance(predictions, dict) else 'the scored epoch')}; "
            f"they are in the report.</p>"
        )
    body.append(f"<h2>Configuration</h2><pre>{html.escape(yaml.safe_dump(report['config'], sort_keys=True))}</pre>")
    return page(report["run_name"], "\n".join(body), 1, plots=True)


def _ties(report: dict) -> str:
    """ASLoRA's ties: a timeline (distance at each tie, per merge group) and, for every layer a tie
    moved, the B it reads at the end (a retired B's readers follow it to the B it was tied to)."""
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
    reads: dict[str, str] = {}
    for e in events:
        for layer in e["layers_sharing"]:
            reads[layer] = e["kept"]
        for layer, b in list(reads.items()):
            if b == e["retired"]:
                reads[layer] = e["kept"]
    rows = [[html.escape(layer), html.escape(b)] for layer, b in sorted(reads.items())]
    events_rows = [
        [str(e["step"]), html.escape(e["group"]), html.escape(f"{e['retired']} → {e['kept']}"), f"{e['distance']:.4g}"]
        for e in events
    ]
    return (
        f"<h2>Ties ({len(events)})</h2>"
        + figure_html(timeline, "ties")
        + table(["step", "group", "retired → kept", "distance"], events_rows)
        + "<h3>Which B each tied layer reads at the end</h3><p>Layers no tie moved read their own B.</p>"
        + table(["layer", "B"], rows)
    )


def _colour(index: int) -> str:
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f"]
    return palette[index % len(palette)]


# ---------------------------------------------------------------------------------------------- build
def build(reports_dir: Path, verdict_path: Path | None, out: Path, reports_href: str | None = None) -> int:
    """Write the site to ``out`` (replaced whole); return the number of pages. ``reports_href``: the
    reports' folder as the run pages link to it (default: its path relative to ``out/runs``)."""
    reports = read_reports(reports_dir)  # every report validated before anything is written
    verdict = json.loads(verdict_path.read_text()) if verdict_path and verdict_path.is_file() else None
    if out.is_symlink():
        raise ValueError(
            f"--out {str(out)!r} is a symbolic link: the site is written in place of one, never through it"
        )
    shutil.rmtree(out, ignore_errors=True)
    (out / "assets").mkdir(parents=True)
    (out / "grids").mkdir()
    (out / "runs").mkdir()
    import plotly

    shutil.copyfile(Path(plotly.__file__).parent / "package_data" / "plotly.min.js", out / "assets" / "plotly.min.js")
    pages = {out / "index.html": index_page(reports, verdict)}
    # links to the reports themselves, relative: the site opens from a file, or from a host serving results/
    if reports_href is None:
        reports_href = quote(os.path.relpath(reports_dir.resolve(), (out / "runs").resolve()))
    grids: dict[str, list[dict]] = {}
    for r in reports:
        grids.setdefault(grid_of(r), []).append(r)
        pages[out / "runs" / f"{r['run_name']}.html"] = run_page(r, reports_href)
    for grid, rs in grids.items():
        pages[out / "grids" / f"{grid}.html"] = grid_page(grid, rs)
    if verdict and "smalldata-confirm" not in grids:
        pages[out / "grids" / "smalldata-confirm.html"] = page(
            "Grid smalldata-confirm", "<p>No run of the confirmatory grid is committed yet.</p>", 1
        )
    for path, text in pages.items():
        path.write_text(text, encoding="utf-8")
    return len(pages)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "results" / "reports")
    parser.add_argument("--verdict", type=Path, default=ROOT / "results" / "smalldata" / "verdict.json")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "site")
    args = parser.parse_args(argv)
    try:
        count = build(args.reports, args.verdict, args.out)
    except ValueError as error:
        print(f"site: {error}; nothing written")
        return 1
    print(f"{count} pages → {args.out} (open {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
