"""The comparison protocol's table and figure (issue 14), from ``results/runs.csv`` alone.

    python -m scripts.reports.protocol_report [--runs results/runs.csv] [--tables results/tables] [--figures results/figures] [--readme README.md]

Table ``protocol_<model>.md``: per task, a row per adapter (and size variant): live adapter
parameters (head excluded) and % of LoRA r=8, the **test** score at the best validation epoch —
median over seeds with the seeds' min–max and n — the validation score beside it,
and the number of seeds; then the paired difference ASLoRA − LoRA on test (the paper's claim), and
the equal-budget table: every ASLoRA setting (the shipped one and its size curves) against the LoRA
rank nearest its size, paired by seed, with t-intervals and exact sign-flip p-values (``scripts/reports/stats.py``).

Table ``protocol-lr_<model>.md``: the lr stage (:mod:`scripts.reports.protocol_lr`).

Figure ``protocol_<model>.png``: per task, test score against adapter parameters (log axis): one
point per adapter with the seeds' range; ASLoRA's ``max_merges`` and distance-threshold curves and
LoRA's rank curve as lines. Nothing is typed by hand; runs of the protocol's final grids only
(``protocol``: classification; ``protocol-instruct``: instruction tuning, held-out loss, lower is better).
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections import defaultdict
from pathlib import Path

from aslora.harness.measuring.display import COLOURS, ORDER
from hydra_glue import ROOT
from scripts.grids.protocol import FINAL_GRIDS, LR_GRIDS
from scripts.reports.protocol_lr import lr_markdown
from scripts.reports.scores import DIRTY_NOTE, dirty_suffix, lower_is_better, row_name, scale, score_digits, unit_label
from scripts.reports.stats import format_median, format_paired, median_range, paired


def groups(rows: list[dict]) -> dict:
    """model → task → (adapter, variant) → runs of the protocol grid."""
    table: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for row in rows:
        if row["grid"] in FINAL_GRIDS and row["test_metric_at_best"] != "":
            table[row["model"]][row["task"]][(row["adapter"], row["variant"])].append(row)
    return table


def _by_seed(runs: list[dict], key: str) -> dict[int, float]:
    return {int(r["seed"]): scale(r) * float(r[key]) for r in runs}


def markdown(model: str, by_task: dict) -> str:
    lines = [
        f"Comparison protocol, {model}: test score at the best validation epoch, median over seeds "
        f"(min–max over seeds, n); validation beside it. Sizes are live adapter "
        f"parameters, head excluded: at the end of the run, and when the scores were made (the best "
        f"validation epoch can come before ASLoRA's last tie; beside it, in how many seeds it did). {DIRTY_NOTE}",
        "",
    ]
    for task, by_adapter in sorted(by_task.items()):
        sample = next(iter(by_adapter.values()))[0]
        standin = f" (stand-in for {sample['task_standin_for']})" if sample["task_standin_for"] else ""
        digits = score_digits(sample)
        better = " (lower is better)" if lower_is_better(sample) else ""
        lines += [
            f"**{task}{standin}**, {sample['main_metric']}{better}",
            "",
            "| adapter | params | % of LoRA | params when scored (seeds before the final size) | test | validation | seeds |",
            "|---|---|---|---|---|---|---|",
        ]
        keys = sorted(
            by_adapter, key=lambda k: (ORDER.index(k[0]) if k[0] in ORDER else 99, _size(by_adapter[k]), k[1])
        )
        for key in keys:
            runs = by_adapter[key]
            test = list(_by_seed(runs, "test_metric_at_best").values())
            val = list(_by_seed(runs, "best_metric").values())
            lines.append(
                f"| {row_name(*key)} | {_size(runs):,} | {_percent_of_lora(runs):.1f} | {_when_scored(runs)} | "
                f"{format_median(test, digits)} | {format_median(val, digits)} | "
                f"{len(test)}{dirty_suffix([r.get('git_dirty') for r in runs])} |"
            )
        lines.append("")
        if ("aslora", "") in by_adapter and ("lora", "") in by_adapter:
            diff = _paired_test(by_adapter["aslora", ""], by_adapter["lora", ""])
            favours = "; negative favours ASLoRA" if lower_is_better(sample) else ""
            lines += [
                f"ASLoRA − LoRA, paired by seed (test{favours}; mean [95 % t-interval], exact sign-flip p): "
                f"{format_paired(diff, digits)}",
                "",
            ]
        lines += _equal_budget_markdown(by_adapter, digits)
    return "\n".join(lines).rstrip() + "\n"


def summary(table: dict) -> str:
    """README's short-regime lines: per model and task, ASLoRA against LoRA r=8 and against LoRA r=2
    (its size), test, paired by seed — mean [95 % t-interval], n, exact sign-flip p. Exploratory (no
    plan fixed these comparisons before the runs), so no word is attached."""
    lines = [
        "| model | task | metric | ASLoRA − LoRA r=8 | ASLoRA − LoRA r=2 |",
        "|---|---|---|---|---|",
    ]
    for model, by_task in sorted(table.items()):
        for task, by_adapter in sorted(by_task.items()):
            sample = next(iter(by_adapter.values()))[0]
            digits = score_digits(sample)
            metric = sample["main_metric"] + unit_label(sample)
            cells = []
            for reference in (("lora", ""), ("lora", "r=2")):
                if ("aslora", "") in by_adapter and reference in by_adapter:
                    cells.append(format_paired(_paired_test(by_adapter["aslora", ""], by_adapter[reference]), digits))
                else:
                    cells.append("—")
            lines.append(f"| {model} | {task} | {metric} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + "\n"


def _paired_test(runs: list[dict], others: list[dict]):
    """``runs − others`` on test, per seed both ran (``scripts/reports/stats.py``)."""
    return paired(_by_seed(runs, "test_metric_at_best"), _by_seed(others, "test_metric_at_best"))


def equal_budget_pairs(by_adapter: dict) -> list[tuple]:
    """Each ASLoRA point (shipped setting and size variants) with the LoRA point (any rank) nearest
    it in size on a log scale; on a tie, the smaller LoRA, so that LoRA never gets more parameters
    than an equally near alternative would give it. The issue's question: is adaptive sharing
    better than simply a smaller LoRA at the same parameter count?"""
    loras = [k for k in by_adapter if k[0] == "lora"]
    pairs = []
    for key in sorted((k for k in by_adapter if k[0] == "aslora"), key=lambda k: _size(by_adapter[k])):
        size = _size(by_adapter[key])
        if not loras or size <= 0:
            continue
        nearest = min(loras, key=lambda k: (abs(math.log(_size(by_adapter[k]) / size)), _size(by_adapter[k])))
        pairs.append((key, nearest))
    return pairs


def _equal_budget_markdown(by_adapter: dict, digits: int = 1) -> list[str]:
    pairs = equal_budget_pairs(by_adapter)
    if not pairs:
        return []
    lines = [
        "Equal budgets: each ASLoRA setting against the LoRA rank nearest its size, test, paired by seed "
        "(mean difference [95 % t-interval over the seeds both ran] (n, exact sign-flip p); below 5 seeds the "
        "differences themselves):",
        "",
        "| ASLoRA | params | LoRA | params | ASLoRA − LoRA | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for aslora, lora in pairs:
        diff = _paired_test(by_adapter[aslora], by_adapter[lora])
        lines.append(
            f"| {row_name(*aslora)} | {_size(by_adapter[aslora]):,} | {row_name(*lora)} | "
            f"{_size(by_adapter[lora]):,} | {format_paired(diff, digits)} | {diff.n} |"
        )
    return lines + [""]


def _size(runs: list[dict]) -> int:
    """The median final size over seeds: a distance threshold can let a different number of ties
    through in each seed, so the size of one run does not speak for the others."""
    return _median_of(runs, "adapter_params_after")


def _when_scored(runs: list[dict]) -> str:
    """``27,648 (3 of 5)``: the median size of the adapters behind the scores, and in how many seeds
    the scored epoch came before the final size; ``—`` where a row predates the column."""
    if any(r.get("adapter_params_at_best", "") == "" for r in runs):
        return "—"
    early = sum(int(r["adapter_params_at_best"]) > int(r["adapter_params_after"]) for r in runs)
    return f"{_median_of(runs, 'adapter_params_at_best'):,} ({early} of {len(runs)})"


def _median_of(runs: list[dict], column: str) -> int:
    """A size column's median over seeds (the upper one for an even count: a size some seed had)."""
    return sorted(int(r[column]) for r in runs)[len(runs) // 2]


def _percent_of_lora(runs: list[dict]) -> float:
    """The median size as % of LoRA r=8 on the same model (``lora_reference``, in every run's report)."""
    return 100 * _size(runs) / float(runs[0]["lora_reference"])


def _variant_value(variant: str, name: str) -> str | None:
    match = re.fullmatch(rf"{name}=([^,]+)", variant)
    return match.group(1) if match else None


def _short(variant: str) -> str:
    """A curve point's setting, short enough to print beside it: ``≤2 ties``, ``d≤2.72``, ``r=4``."""
    if (value := _variant_value(variant, "max_merges")) is not None:
        return "no ties" if value == "0" else f"≤{value} tie" + ("" if value == "1" else "s")
    if (value := _variant_value(variant, "merge_distance_threshold")) is not None:
        return f"d≤{value}"
    return variant


def figure(model: str, by_task: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aslora.harness.measuring.display import MODEL_NAMES, TASK_NAMES
    from aslora.harness.measuring.figures import save

    tasks = sorted(by_task)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        by_adapter = by_task[task]
        point, scored = {}, {}
        for key, runs in by_adapter.items():
            point[key] = (_size(runs), median_range(list(_by_seed(runs, "test_metric_at_best").values())))
            if all(r.get("adapter_params_at_best", "") != "" for r in runs):
                scored[key] = _median_of(runs, "adapter_params_at_best")
        curves = {  # (label, style, keys in order of size)
            "ASLoRA, max_merges": [
                k for k in point if k[0] == "aslora" and (k[1] == "" or _variant_value(k[1], "max_merges"))
            ],
            "ASLoRA, distance threshold": [
                k
                for k in point
                if k[0] == "aslora" and (k[1] == "" or _variant_value(k[1], "merge_distance_threshold"))
            ],
            "LoRA, rank": [k for k in point if k[0] == "lora" and (k[1] == "" or _variant_value(k[1], "r"))],
        }
        for (label, keys), style in zip(curves.items(), ("-", ":", "--"), strict=True):
            if len(keys) > 1:
                keys = sorted(keys, key=lambda k: point[k][0])
                ax.plot(
                    [point[k][0] for k in keys],
                    [point[k][1][0] for k in keys],
                    style,
                    color="grey",
                    linewidth=1,
                    label=label,
                )
        # a curve point's label names the setting that made it; ASLoRA's max_merges and threshold
        # points that coincide (same size and score, as when a threshold lets the same ties through)
        # share one label, below the point; a threshold point of its own is labelled above it
        curve_labels: dict = defaultdict(list)
        for key, (size, (median, low, high, _)) in sorted(point.items(), key=lambda kv: kv[1][0]):
            if size <= 0:
                continue  # full fine-tuning has no adapter size to place on this axis
            ax.errorbar(
                [size],
                [median],
                yerr=[[median - low], [high - median]],
                fmt="o",
                capsize=3,
                markersize=7 if key[1] == "" else 4,
                color=COLOURS.get(key[0], "black"),
            )
            if scored.get(key, size) > size:
                # the score was made before the last tie: the table's "params when scored" column,
                # drawn — an open marker at that size, joined to the final size the point sits at
                ax.plot([size, scored[key]], [median, median], color=COLOURS.get(key[0], "black"), linewidth=0.8)
                ax.plot(
                    [scored[key]],
                    [median],
                    "s",
                    markerfacecolor="white",
                    color=COLOURS.get(key[0], "black"),
                    markersize=6,
                    zorder=4,  # above a point that sits at the same size and score
                    label="size when scored (median), if larger"
                    if not any(line.get_label().startswith("size when scored") for line in ax.get_lines())
                    else None,
                )
            if key[1] == "" or key == ("lora", "r=2"):
                ax.annotate(row_name(*key), (size, median), textcoords="offset points", xytext=(6, 4), fontsize=8)
            else:
                curve_labels[key[0], size, round(median, 6)].append(key[1])
        for (_, size, estimate), variants in curve_labels.items():
            above = all(_variant_value(v, "merge_distance_threshold") for v in variants) and any(
                k[1] == size and k[2] != estimate for k in curve_labels
            )  # another point shares its size
            # stacked, not side by side: neighbouring curve points are ~50 px apart on the log axis
            ax.annotate(
                "\n".join(_short(v) for v in variants),
                (size, estimate),
                textcoords="offset points",
                xytext=(4, 4) if above else (4, -4),
                va="bottom" if above else "top",
                fontsize=7,
                color="dimgrey",
                linespacing=1.0,
            )
        ax.set_xscale("log")
        ax.set_xlabel("adapter parameters after merging (live, head excluded; log scale)")
        sample = next(iter(by_adapter.values()))[0]
        ax.set_ylabel(f"test {sample['main_metric']}{unit_label(sample)}")
        steps = sorted({int(r["steps"]) for runs in by_adapter.values() for r in runs if r.get("steps")})
        ax.set_title(
            TASK_NAMES.get(task, task) + (f" · {'/'.join(map(str, steps))} steps per run" if steps else ""), fontsize=10
        )
        if ax.get_legend_handles_labels()[0]:  # a suite without size curves has no lines to name
            ax.legend(fontsize=8, loc="best")  # wherever it hides no point or bar
    devices = sorted({r["device"] for t in by_task.values() for runs in t.values() for r in runs if r.get("device")})
    parts = [
        f"Score against size, {MODEL_NAMES.get(model, model)}",
        "median over seeds, bars min–max over seeds",
        "; ".join(devices),
    ]
    # one panel is too narrow for the title on one line
    fig.suptitle((" · " if len(tasks) > 1 else "\n").join(p for p in parts if p), fontsize=10)
    return save(fig, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--tables", type=Path, default=ROOT / "results" / "tables")
    parser.add_argument("--figures", type=Path, default=ROOT / "results" / "figures")
    parser.add_argument("--if-any", action="store_true", help="exit quietly when there are no protocol runs")
    parser.add_argument(
        "--readme",
        type=Path,
        default=None,
        help="fill this file's <!-- table:protocol_<model> --> blocks (make_tables fills the others)",
    )
    args = parser.parse_args(argv)
    with open(args.runs, newline="") as f:
        rows = list(csv.DictReader(f))

    table = groups(rows)
    tables = {
        f"protocol-lr_{model}": lr_markdown(model, rows)
        for model in sorted({r["model"] for r in rows if r["grid"] in LR_GRIDS})
    }
    if not table:
        print(f"no runs of the protocol's final grids in {args.runs}: no protocol table or figure")
        if not args.if_any:
            raise SystemExit(f"no runs of the protocol grid in {args.runs}: run `make protocol`")
    if table:
        tables["protocol_summary"] = summary(table)
    for model, by_task in sorted(table.items()):
        tables[f"protocol_{model}"] = markdown(model, by_task)
        print(f"wrote {figure(model, by_task, args.figures / f'protocol_{model}.png')}")
    for name, text in tables.items():
        args.tables.mkdir(parents=True, exist_ok=True)
        (args.tables / f"{name}.md").write_text(text)
        print(f"wrote {args.tables / name}.md")
    if args.readme is not None and tables:
        from scripts.reports.make_tables import PROTOCOL_BLOCKS, fill_readme

        # its own blocks only: a block another script fills (the benchmarks' ``bench_*``) is not missing here
        filled = fill_readme(args.readme, tables, owns=lambda name: name.startswith(PROTOCOL_BLOCKS))
        print(f"filled {', '.join(filled) or 'no'} table(s) in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
