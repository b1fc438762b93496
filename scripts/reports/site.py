"""The results as a static site a reader opens offline: ``make site`` → ``results/site/``.

    python -m scripts.reports.site [--reports results/reports] [--verdict results/smalldata/verdict.json]
                                   [--examples results/smalldata/per_example.json]
                                   [--figure results/figures/smalldata_verdict.png] [--out results/site]

Built only from committed inputs — the runs' reports (``results/reports/<run>.json``) and the
small-data plan's outcomes (``results/smalldata/verdict.json``) — so it regenerates byte for byte
(no timestamps, sorted everywhere, fixed plot ids). Pages:

* ``index.html`` — the plan's verdict: its figure, then one table per score rule (the primary rule's
  first) of each claim's interval, n of planned, p and word, linked to the grid behind it; beside the
  primary rule, the same comparisons over seeds *and* test examples (``results/smalldata/per_example.json``,
  :mod:`scripts.reports.smalldata_examples`; exploratory, no word);
  the grids; a filterable table of every run (grid, model, task, adapter, arm, seed, lr, score, size, time);
* ``grids/<grid>.html`` (:mod:`scripts.reports.site_grid`) — the arms table (the small-data plan's arm
  names where it names them); each arm's mean validation curve in its band over seeds, every seed a
  legend click away; test score against adapter size at the scored epoch;
* ``runs/<run>.html`` (:mod:`scripts.reports.site_run`) — command line, commit (and whether the tree was
  dirty), hardware, config, curves, ASLoRA's ties (the sharing map at the end as a heat map, replayed
  from the merge log; the ties' timeline and table), the kept test predictions tabulated (accuracy
  per epoch recomputed from them, the confusion matrix and every example at the scored epoch), and a
  link to the report itself.

Plots are plotly's, with ``plotly.min.js`` copied once beside the pages (no network at view time);
the only hand-written JavaScript is the run table's filter box.
"""

from __future__ import annotations

import argparse
import html
import os
import shutil
from dataclasses import fields
from pathlib import Path
from urllib.parse import quote

from aslora.harness.runs.report import grid_of
from aslora.json_file import read_json
from hydra_glue import ROOT
from scripts.reports.site_grid import arm_name, grid_page, plan_names
from scripts.reports.site_html import page, run_link, score_text, scored_size, table, test_score, val_score
from scripts.reports.site_run import run_page
from scripts.reports.smalldata_examples import ExampleComparison
from scripts.reports.smalldata_outcomes import Outcome
from scripts.reports.smalldata_verdict_text import interval_text, p_text
from scripts.reports.stats import Crossed

FIGURE = ROOT / "results" / "figures" / "smalldata_verdict.png"
"""The verdict's figure (``python -m scripts.reports.smalldata_verdict`` writes it beside verdict.json's numbers)."""

FILTER_JS = """<script>
function filterRuns(q){q=q.toLowerCase();for(const tr of document.querySelectorAll('#runs tbody tr'))
tr.style.display=tr.textContent.toLowerCase().includes(q)?'':'none';}
</script>"""


def read_reports(directory: Path) -> list[dict]:
    from aslora.harness.runs.report import load_report

    return sorted((load_report(p) for p in directory.glob("*.json")), key=lambda r: r["run_name"])


def index_page(
    reports: list[dict],
    verdict: dict | None,
    figure: str | None = None,
    names: dict[str, str] | None = None,
    examples: dict | None = None,
) -> str:
    """The landing page: the plan's verdict (``figure``: its image, relative to the page; ``examples``:
    its comparisons over seeds and test examples), the grids, every run (``names``:
    :func:`scripts.reports.site_grid.plan_names`)."""
    parts = [verdict_section(verdict, figure, examples)] if verdict else []
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
            html.escape(arm_name(r, names or {})),
            str(r["seed"]),
            f"{r['config']['train']['lr']:g}",
            score_text(r["main_metric"], val_score(r)),
            score_text(r["main_metric"], test_score(r)),
            f"{scored_size(r):,}",
            f"{r['train_seconds'] / 60:.1f}",
            run_link(r, 0),
        ]
        for r in reports
    ]
    parts.append(
        f"<h2>Every run ({len(reports)})</h2>"
        "<p>Scores at each run's best validation epoch: accuracy-like metrics ×100, a loss as it is (lower is "
        "better); size is the adapter's at that epoch; minutes of training.</p>"
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
                "val",
                "test",
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


VERDICT_KEYS = ("plan", "plan_commit", "status", "alpha", "margin", "primary_rule", "rules", "outcomes")


def check_verdict(verdict: dict, path: Path) -> None:
    """Refuse (naming what is missing) a ``verdict.json`` written by older code, before any page is written."""
    missing = [key for key in VERDICT_KEYS if key not in verdict]
    # every outcome its planned n (the site shows "n of planned"): one without it was written by older code
    outcomes = verdict.get("outcomes") or []
    lacking = sum("planned" not in o for o in outcomes)
    if lacking:
        missing.append(f"planned ({lacking} of {len(outcomes)} outcomes)")
    if missing:
        raise ValueError(
            f"{path} lacks {', '.join(missing)}: regenerate it with `python -m scripts.reports.smalldata_verdict`"
        )


EXAMPLE_KEYS = tuple(f.name for f in fields(ExampleComparison))
"""What each row of ``per_example.json`` must hold, ``both`` as a :class:`scripts.reports.stats.Crossed`."""


def check_examples(examples: dict, path: Path) -> None:
    """Refuse (naming what is missing) a ``per_example.json`` the site cannot show, before any page is written."""
    rows = examples.get("comparisons")
    if not isinstance(rows, list):
        raise ValueError(
            f"{path} has no list of comparisons: regenerate it with `python -m scripts.reports.smalldata_examples`"
        )
    for i, row in enumerate(rows):
        missing = [k for k in EXAMPLE_KEYS if k not in row] + [
            f"both.{f.name}" for f in fields(Crossed) if f.name not in row.get("both", {})
        ]
        if missing:
            raise ValueError(
                f"{path}: comparison {i} lacks {', '.join(missing)}: regenerate it with "
                "`python -m scripts.reports.smalldata_examples`"
            )


def examples_section(examples: dict, rule: str) -> str:
    """The primary rule's comparisons over seeds and over seeds *and* test examples, side by side."""
    rows = [
        [
            html.escape(f"{c['a']} − {c['b']}"),
            str(c["seeds"]),
            f"{c['both']['mean']:+.2f}",
            f"[{c['seed_interval'][0]:+.2f}, {c['seed_interval'][1]:+.2f}]",
            f"[{c['both']['low']:+.2f}, {c['both']['high']:+.2f}] (df {c['both']['df']:.0f})",
            f"{c['both']['examples_share']:.0%}",
            f"{c['a_more']} / {c['b_more']}",
        ]
        for c in examples["comparisons"]
        if c["rule"] == rule
    ]
    if not rows:
        return ""
    n_examples = examples["comparisons"][0]["both"]["examples"]
    return (
        "<h3>The same comparisons over seeds and test examples (exploratory, no word)</h3>"
        f"<p>The intervals above hold the {n_examples} test examples fixed: what another seed would do on this "
        "test set. Every confirmatory run kept its prediction for each test example, so each comparison is also "
        "a seeds × examples matrix; its interval over both (a crossed random-effects design) says what another "
        "seed would do on the task's examples, and the examples' share is the part of that interval's variance "
        "a larger test set would shrink.</p>"
        + table(
            [
                "comparison",
                "seeds",
                "mean",
                "over seeds (95 %)",
                "over seeds and examples (95 %)",
                "examples' share",
                "examples A / B gets right more often",
            ],
            rows,
        )
    )


def verdict_section(verdict: dict, figure: str | None, examples: dict | None = None) -> str:
    """The plan's outcomes, one table per score rule, the plan's primary rule (whose words are the
    verdict) first, with the verdict figure above them; then the exploratory seeds, without words."""
    rules: dict[str, str] = verdict["rules"]
    primary = verdict["primary_rule"]
    parts = [
        f"<h2>The verdict: plan <code>{html.escape(verdict['plan'])}</code> ({html.escape(verdict['status'])})</h2>"
        f"<p>Differences in test accuracy ×100, paired by seed: the mean with its 95 % t-interval, n of the "
        f"planned n, the sign-flip p (Holm within each family), the smallest difference the design could "
        f"detect (80 % power) and the word the plan assigns at α = {verdict['alpha']} and margin "
        f"±{verdict['margin']}. Plan committed in <code>{html.escape(str(verdict['plan_commit']))}</code>; the "
        f'runs are those of the <a href="grids/smalldata-confirm.html">smalldata-confirm</a> grid.</p>'
    ]
    if figure:
        parts.append(
            f'<p><img src="{html.escape(figure)}" style="max-width:100%" alt="each preregistered comparison: '
            f'its 95 % t-interval over the margin, its n and word; the exploratory seeds beneath"></p>'
        )
    for rule in sorted(rules, key=lambda r: r != primary):
        role = "the plan's primary rule: its words are the verdict" if rule == primary else "reported beside"
        parts.append(
            f"<h3>Scored at the {html.escape(rules[rule])} ({html.escape(role)})</h3>"
            + _outcomes([o for o in verdict["outcomes"] if o["rule"] == rule], planned=True)
        )
        if rule == primary and examples:
            parts.append(examples_section(examples, rule))
    if verdict.get("exploratory"):
        parts.append(
            "<h3>The same comparisons on the exploratory runs (seeds 1–5, before the plan)</h3>"
            '<p>From the <a href="grids/smalldata.html">smalldata</a> grid, at the best validation epoch; '
            "exploratory: what suggested the plan, without words.</p>"
            + _outcomes([o for o in verdict["exploratory"] if o["rule"] == "best"], planned=False)
        )
    return "\n".join(parts)


def _outcomes(outcomes: list[dict], planned: bool) -> str:
    rows = [
        [
            html.escape(o["family"]),
            html.escape(f"{o['a']} − {o['b']}"),
            html.escape(o.get("claim", "")),
            interval_text(Outcome(**{f.name: o[f.name] for f in fields(Outcome)})),
            f"{o['n']} of {o['planned']}" if planned else str(o["n"]),
            p_text(o.get("p_diff_holm")),
            "—" if o.get("mde") is None else f"{o['mde']:.2f}",
        ]
        + ([f"<b>{html.escape(o['word'] or '—')}</b>"] if planned else [])
        for o in outcomes
    ]
    header = ["family", "comparison", "claim", "mean [95 % CI]", "n", "p (Holm)", "could detect ≥"]
    return table(header + (["word"] if planned else []), rows)


# ---------------------------------------------------------------------------------------------- build
def build(
    reports_dir: Path,
    verdict_path: Path | None,
    out: Path,
    reports_href: str | None = None,
    figure: Path | None = FIGURE,
    examples_path: Path | None = None,
) -> int:
    """Write the site to ``out`` (replaced whole); return the number of pages. ``reports_href``: the
    reports' folder as the run pages link to it (default: its path relative to ``out/runs``);
    ``figure``: the verdict's figure, copied beside the pages and shown above the verdict (if it exists);
    ``examples_path``: ``per_example.json`` (default: beside the verdict), shown under its primary rule."""
    reports = read_reports(reports_dir)  # every report validated before anything is written
    verdict = None
    if verdict_path and verdict_path.is_file():
        verdict = read_json(verdict_path, "a verdict (verdict.json)", expect=dict)
        check_verdict(verdict, verdict_path)
    examples = None
    examples_path = examples_path or (verdict_path.parent / "per_example.json" if verdict_path else None)
    if verdict and examples_path and examples_path.is_file():
        examples = read_json(examples_path, "per-example comparisons (per_example.json)", expect=dict)
        check_examples(examples, examples_path)
    figure = figure if verdict and figure and figure.is_file() else None
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
    if figure:
        shutil.copyfile(figure, out / "assets" / figure.name)
    names = plan_names(reports)
    pages = {
        out / "index.html": index_page(
            reports, verdict, f"assets/{quote(figure.name)}" if figure else None, names, examples
        )
    }
    # links to the reports themselves, relative: the site opens from a file, or from a host serving results/
    if reports_href is None:
        reports_href = quote(os.path.relpath(reports_dir.resolve(), (out / "runs").resolve()))
    grids: dict[str, list[dict]] = {}
    for r in reports:
        grids.setdefault(grid_of(r), []).append(r)
        pages[out / "runs" / f"{r['run_name']}.html"] = run_page(r, reports_href, arm_name(r, names))
    for grid, rs in grids.items():
        pages[out / "grids" / f"{grid}.html"] = grid_page(grid, rs, names)
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
    parser.add_argument("--figure", type=Path, default=FIGURE, help="the verdict's figure (shown if it exists)")
    parser.add_argument("--examples", type=Path, default=None, help="per_example.json (default: beside --verdict)")
    args = parser.parse_args(argv)
    try:
        count = build(args.reports, args.verdict, args.out, figure=args.figure, examples_path=args.examples)
    except ValueError as error:
        print(f"site: {error}; nothing written")
        return 1
    print(f"{count} pages → {args.out} (open {args.out / 'index.html'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
