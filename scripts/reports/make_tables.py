"""``results/runs.csv`` (+ ``results/reference.csv``) → ``results/tables/*.md`` and ``*.tex``.

    python -m scripts.reports.make_tables [--runs results/runs.csv] [--out results/tables] [--readme README.md]

With ``--readme``, each block ``<!-- table:NAME -->`` … ``<!-- /table:NAME -->`` in that file is
replaced by table NAME, so README's tables are generated too (``make tables`` does this).

One table per (grid, model): a row per adapter, a column per task. Each cell is the median over
seeds of the task's main metric (×100; instruction tuning's held-out loss as is), with the spread (half the min–max range) and the number of
seeds; the adapter's parameter count after merging and as a % of LoRA's sit beside it. Published
numbers for the same model and task (``reference.csv``, with sources) follow as their own rows,
marked "published". Stand-in tasks are labelled as such. Nothing here is typed by hand. The
comparison protocol's grids (``scripts.grids.protocol.LR_GRIDS``, ``FINAL_GRIDS``) are tabled by ``scripts/reports/protocol_report.py``
(and the small-data suite's by ``scripts/reports/smalldata_report.py``)
instead: their runs differ by lr, not seed, or need intervals.
"""

from __future__ import annotations

import argparse
import csv
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from aslora.harness.measuring.display import DISPLAY_NAMES, ORDER
from aslora.harness.measuring.metrics import LOWER_IS_BETTER
from hydra_glue import ROOT
from scripts.grids.protocol import FINAL_GRIDS, LR_GRIDS
from scripts.grids.smalldata import CONFIRM_GRID as SMALLDATA_CONFIRM
from scripts.grids.smalldata import DEPTH_GRID as SMALLDATA_DEPTH
from scripts.grids.smalldata import FINAL_GRID as SMALLDATA_FINAL
from scripts.grids.smalldata import LR_GRID as SMALLDATA_LR

ADAPTER_ORDER, ADAPTER_NAMES = ORDER, DISPLAY_NAMES  # aslora/harness/measuring/display.py: one row per adapter
METRIC_NAMES = {
    "accuracy": "acc",
    "mcc": "MCC",
    "pearson": "Pearson",
    "f1": "F1",
    "macro_f1": "macro-F1",
    "loss": "loss ↓",
    "perplexity": "perplexity ↓",
}
UNSCALED = LOWER_IS_BETTER
"""Metrics shown as they are (instruction tuning's held-out loss and perplexity: the lower-is-better
ones); the GLUE-style ones are ×100."""


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


OWNED_GRIDS = (*LR_GRIDS, *FINAL_GRIDS, SMALLDATA_LR, SMALLDATA_FINAL, SMALLDATA_DEPTH, SMALLDATA_CONFIRM)
"""Grids another report tables — per lr, and at the best validation epoch with intervals over seeds
(``scripts/reports/protocol_report.py``, ``scripts/reports/smalldata_report.py``): a median-± table here would be a
second, different number for the same runs."""


def cells(runs: list[dict]) -> dict:
    """(grid, model) → (adapter, variant) → task → list of rows, for every grid not in :data:`OWNED_GRIDS`."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for run in runs:
        if run["grid"] in OWNED_GRIDS:
            continue
        table[(run["grid"], run["model"])][(run["adapter"], run.get("variant", ""))][run["task"]].append(run)
    return table


def summarise(rows: list[dict]) -> tuple[float, float, int]:
    scale = 1 if rows[0]["main_metric"] in UNSCALED else 100
    values = [scale * float(r["best_metric"]) for r in rows]
    return statistics.median(values), (max(values) - min(values)) / 2, len(values)


def _cell(rows: list[dict]) -> str:
    median, spread, n = summarise(rows)
    digits = 3 if rows[0]["main_metric"] in UNSCALED else 1
    return f"{median:.{digits}f} ± {spread:.{digits}f} ({n})"


def build(runs: list[dict], reference: list[dict]) -> dict[str, tuple[str, str]]:
    """Table name → (markdown, latex)."""
    out = {}
    for (grid, model), by_adapter in sorted(cells(runs).items()):
        tasks = sorted({task for per_task in by_adapter.values() for task in per_task})
        sample = {task: next(r for per_task in by_adapter.values() for r in per_task.get(task, [])) for task in tasks}
        header_tasks = [
            f"{task}{' (stand-in for ' + sample[task]['task_standin_for'] + ')' if sample[task]['task_standin_for'] else ''}"
            f" {METRIC_NAMES.get(sample[task]['main_metric'], sample[task]['main_metric'])}"
            for task in tasks
        ]
        body = []
        for adapter, variant in sorted(
            by_adapter, key=lambda k: (ADAPTER_ORDER.index(k[0]) if k[0] in ADAPTER_ORDER else 99, k)
        ):
            per_task = by_adapter[(adapter, variant)]
            any_rows = [r for rs in per_task.values() for r in rs]
            params = statistics.median(int(r["adapter_params_after"]) for r in any_rows)
            fraction = statistics.median(float(r["fraction_of_lora_after"]) for r in any_rows)
            scores = []
            for task in tasks:
                if per_task.get(task):
                    scores.append(_cell(per_task[task]))
                else:
                    scores.append("—")
            label = ADAPTER_NAMES.get(adapter, adapter) + (f" [{variant}]" if variant else "")
            body.append([label, f"{params:,.0f}", f"{100 * fraction:.1f}", *scores])
        for ref in sorted({r["method"] for r in reference if r["model"] == model}, key=ADAPTER_ORDER.index):
            values = {r["task"]: r for r in reference if r["model"] == model and r["method"] == ref}
            if not any(task in values for task in tasks):
                continue
            body.append(
                [
                    f"{ADAPTER_NAMES.get(ref, ref)} (published)",
                    f"{int(next(iter(values.values()))['adapter_params']):,}",
                    "",
                    *[values[t]["value"] if t in values else "—" for t in tasks],
                ]
            )
        columns = ["adapter", "adapter params (after merges)", "% of LoRA", *header_tasks]
        devices = sorted({r["device"] for rs in by_adapter.values() for rows in rs.values() for r in rows})
        unscaled = any(sample[t]["main_metric"] in UNSCALED for t in tasks)
        caption = (
            f"{model}, grid '{grid}': median over seeds {'' if unscaled else '×100 '}± half the range (seeds)"
            f"{'; held-out token loss on the response tokens, lower is better' if unscaled else ''}. "
            f"Generated by scripts/reports/make_tables.py from results/runs.csv; hardware: {'; '.join(devices)}."
        )
        out[f"{grid}_{model}"] = (_markdown(caption, columns, body), _latex(caption, columns, body))
    return out


def _markdown(caption: str, columns: list[str], body: list[list[str]]) -> str:
    lines = [
        "<!-- generated by scripts/reports/make_tables.py; do not edit -->",
        f"{caption}",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def _latex(caption: str, columns: list[str], body: list[list[str]]) -> str:
    escape = lambda s: (
        s.replace("%", r"\%")
        .replace("_", r"\_")
        .replace("±", r"$\pm$")
        .replace("—", "--")
        .replace("↓", r"$\downarrow$")
    )
    lines = [
        "% generated by scripts/reports/make_tables.py; do not edit",
        r"\begin{table}[t]",
        r"\centering",
        r"\begin{tabular}{l" + "r" * (len(columns) - 1) + "}",
        r"\toprule",
        " & ".join(escape(c) for c in columns) + r" \\",
        r"\midrule",
    ]
    lines += [" & ".join(escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{escape(caption)}}}", r"\end{table}"]
    return "\n".join(lines) + "\n"


PROTOCOL_BLOCKS = ("protocol_", "protocol-lr_")
"""README blocks ``scripts/reports/protocol_report.py`` fills: ``protocol_<model>``, ``protocol-lr_<model>``."""
OTHER_OWNERS = (*PROTOCOL_BLOCKS, "bench_", "earlier_", "demo_", "run_times", "dirty_reruns")
"""README blocks another script fills (``scripts/reports/protocol_report.py``: ``protocol_<model>``,
``protocol-lr_<model>``; ``scripts/bench/report.py``: ``bench_speed``, ``bench_depth``;
``scripts/reports/earlier_runs.py``: ``earlier_instruct``, ``earlier_sharing``, ``earlier_merge``;
``scripts/reports/demo_run.py``: ``demo_run``; ``scripts/reports/run_times.py``: ``run_times``;
``scripts/reports/dirty_reruns.py``: ``dirty_reruns``)."""


def fill_readme(path: Path, tables: dict[str, str], owns=lambda name: not name.startswith(OTHER_OWNERS)) -> list[str]:
    """Replace each marked block in ``path`` by its generated markdown table (``tables``: name →
    markdown); return the names filled. A block
    this caller ``owns`` that it has no table for is an error (a table README shows but nothing makes)."""
    text, filled = path.read_text(), []
    for name, markdown in tables.items():
        pattern = re.compile(rf"(<!-- table:{re.escape(name)} -->\n).*?(<!-- /table:{re.escape(name)} -->)", re.S)
        text, n = pattern.subn(lambda m, markdown=markdown: m.group(1) + markdown + m.group(2), text)
        if n:
            filled.append(name)
    missing = sorted(name for name in set(re.findall(r"<!-- table:([\w.-]+) -->", text)) - set(tables) if owns(name))
    if missing:
        raise SystemExit(f"{path} marks table(s) {missing} that runs.csv does not produce")
    path.write_text(text)
    return filled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--reference", type=Path, default=ROOT / "results" / "reference.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--readme", type=Path, default=None, help="fill this file's marked table blocks")
    args = parser.parse_args(argv)
    if not args.runs.is_file():
        raise SystemExit(f"{args.runs} does not exist: run `python -m scripts.reports.collect_results` first")
    tables = build(read_csv(args.runs), read_csv(args.reference))
    args.out.mkdir(parents=True, exist_ok=True)
    for name, (markdown, latex) in tables.items():
        (args.out / f"{name}.md").write_text(markdown)
        (args.out / f"{name}.tex").write_text(latex)
        print(f"wrote {args.out / name}.md and .tex")
    if args.readme is not None:
        markdown = {name: md for name, (md, _) in tables.items()}
        print(f"filled {', '.join(fill_readme(args.readme, markdown)) or 'no'} table(s) in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
