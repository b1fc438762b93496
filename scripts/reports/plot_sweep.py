"""Score and adapter size against each swept ASLoRA merge setting (``make sweep-merge``).

    python -m scripts.reports.plot_sweep [--runs results/runs.csv] [--out results/figures]

Reads the runs of the ``merge`` grid from runs.csv; the swept setting of each run is its
``variant`` column (``max_merges=2``: what its report records as data, not parsed from the run
name). One figure per setting: median validation score over seeds (with min–max) and adapter parameters after merging.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import matplotlib

from hydra_glue import ROOT

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def swept_points(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """setting → value → runs."""
    points: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["grid"] != "merge":
            continue
        for part in filter(None, row["variant"].split(",")):  # runs.csv: "max_merges=2,merge_candidates=all"
            name, _, value = part.partition("=")
            points[name][value].append(row)
    return points


def _order(value: str):
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


SETTING_NAMES = {
    "max_merges": "ties per module type (max_merges)",
    "merge_candidates": "which pairs may tie (merge_candidates)",
    "merge_distance_threshold": "largest distance that may tie (merge_distance_threshold)",
    "merge_start_fraction": "first merge after this fraction of the run (merge_start_fraction)",
    "merge_interval_fraction": "merge interval, fraction of the run (merge_interval_fraction)",
    "merge_selection": "which pair ties (merge_selection)",
    "a_sharing": "A shared by (a_sharing)",
}


def plot(setting: str, by_value: dict[str, list[dict]], out: Path) -> Path:
    """Two panels, one y-axis each: the score (median over seeds, min–max bars) and the adapter's
    size as a % of LoRA's (with the paper's 25 % line), both against the swept setting."""
    from aslora.harness.measuring.display import MODEL_NAMES, TASK_NAMES
    from aslora.harness.measuring.figures import save

    values = sorted(by_value, key=_order)
    scores = [[100 * float(r["best_metric"]) for r in by_value[v]] for v in values]
    sizes = [statistics.median(100 * float(r["fraction_of_lora_after"]) for r in by_value[v]) for v in values]
    seeds = sorted({int(r["seed"]) for v in values for r in by_value[v]})
    x = list(range(len(values)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    medians = [statistics.median(s) for s in scores]
    left.errorbar(
        x,
        medians,
        yerr=[
            [m - min(s) for m, s in zip(medians, scores, strict=True)],
            [max(s) - m for m, s in zip(medians, scores, strict=True)],
        ],
        fmt="o-" if all(_order(v)[0] == 0 for v in values) else "o",
        capsize=3,
    )  # no line between categories
    left.set_xlim(-0.5, len(x) - 0.5)
    spread = max(max(max(s) for s in scores) - min(min(s) for s in scores), 2.0)  # never a sub-point scale
    middle = (max(max(s) for s in scores) + min(min(s) for s in scores)) / 2
    left.set_ylim(middle - 0.75 * spread, middle + 0.75 * spread)
    metric = by_value[values[0]][0]["main_metric"]
    left.set_ylabel(f"validation {metric} ×100")
    left.set_title(f"score (median of {len(seeds)} seeds, bars: min–max)", fontsize=9)
    right.bar(x, sizes, color="tab:orange", width=0.6)
    right.axhline(25, color="black", linestyle="--", linewidth=1)
    right.text(-0.45, 25, "25 % of LoRA", va="bottom", ha="left", fontsize=8)
    right.set_ylim(0, max(max(sizes), 25) * 1.15)
    right.set_ylabel("adapter parameters, % of LoRA r=8")
    right.set_title("adapter size after merging", fontsize=9)
    for ax in (left, right):
        ax.set_xticks(x, values)
        ax.set_xlabel(SETTING_NAMES.get(setting, setting), fontsize=8)
    sample = by_value[values[0]][0]
    fig.suptitle(
        f"ASLoRA, {MODEL_NAMES.get(sample['model'], sample['model'])} on "
        f"{TASK_NAMES.get(sample['task'], sample['task'])}: {SETTING_NAMES.get(setting, setting)}",
        fontsize=10,
    )
    return save(fig, out / f"sweep_{setting}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "figures")
    parser.add_argument(
        "--if-any",
        action="store_true",
        help="exit quietly when runs.csv has no merge-grid runs (`make figures` uses this)",
    )
    args = parser.parse_args(argv)
    with open(args.runs, newline="") as f:
        points = swept_points(list(csv.DictReader(f)))
    if not points:
        if args.if_any:
            print(f"no runs of the merge grid in {args.runs}: no sweep figures")
            return 0
        raise SystemExit(f"no runs of the merge grid in {args.runs}: run `make sweep-merge`")
    args.out.mkdir(parents=True, exist_ok=True)
    for setting, by_value in sorted(points.items()):
        print(f"wrote {plot(setting, by_value, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
