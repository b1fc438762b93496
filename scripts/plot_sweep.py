"""Score and adapter size against each swept ASLoRA merge setting (``make sweep-merge``).

    python -m scripts.plot_sweep [--runs results/runs.csv] [--out results/figures]

Reads the runs of the ``merge`` grid from runs.csv; the swept setting of each run is the
``adapter.params.<name>=<value>`` part of its run name (Hydra puts swept keys there). One figure per
setting: median validation score over seeds (with min–max) and adapter parameters after merging.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from scripts.collect_results import SWEPT

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def swept_points(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """setting → value → runs."""
    points: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["grid"] != "merge":
            continue
        for name, value in SWEPT.findall(row["run_name"]):
            points[name][value].append(row)
    return points


def _order(value: str):
    try:
        return (0, float(value))
    except ValueError:
        return (1, value)


def plot(setting: str, by_value: dict[str, list[dict]], out: Path) -> Path:
    values = sorted(by_value, key=_order)
    scores = [[100 * float(r["best_metric"]) for r in by_value[v]] for v in values]
    params = [statistics.median(int(r["adapter_params_after"]) for r in by_value[v]) for v in values]
    x = range(len(values))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    medians = [statistics.median(s) for s in scores]
    ax.errorbar(x, medians, yerr=[[m - min(s) for m, s in zip(medians, scores)],
                                  [max(s) - m for m, s in zip(medians, scores)]], fmt="o-", capsize=3, label="score")
    ax.set_xticks(list(x), values)
    ax.set_xlabel(setting)
    ax.set_ylabel(f"validation {by_value[values[0]][0]['main_metric']} ×100 (median, min–max)")
    twin = ax.twinx()
    twin.plot(list(x), params, "s--", color="tab:orange", label="adapter params")
    twin.set_ylabel("adapter parameters after merging", color="tab:orange")
    sample = by_value[values[0]][0]
    ax.set_title(f"ASLoRA, {sample['model']} on {sample['task']}: {setting}", fontsize=9)
    fig.tight_layout()
    path = out / f"sweep_{setting}.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "figures")
    parser.add_argument("--if-any", action="store_true",
                        help="exit quietly when runs.csv has no merge-grid runs (`make figures` uses this)")
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
