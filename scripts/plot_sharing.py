"""The sharing map of a finished ASLoRA run (the paper's Figure 3) and its merge timeline.

    python -m scripts.plot_sharing experiments/<run_name> [--out DIR] [--wandb-mode offline]

Writes ``sharing_map.png`` (per module type, which layers share one B at the end of training) and
``merge_timeline.png`` (distinct B's over the training steps, and each tie's running-mean distance)
into the run directory (or ``--out``); with ``--wandb-mode offline|online`` also logs them to wandb.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def load(run_dir: Path) -> tuple[dict, dict]:
    from aslora.export import read_adapter_meta

    report_path = run_dir / "report.json"
    if not report_path.is_file():
        raise SystemExit(f"{report_path} not found: {run_dir} is not a finished ASLoRA run")
    try:
        adapter = read_adapter_meta(run_dir / "adapter")
    except ValueError as error:
        raise SystemExit(f"{run_dir} is not a finished ASLoRA run: {error}") from None
    if adapter.get("adapter_type") != "ASLoRAConfig":
        raise SystemExit(f"{run_dir} is a {adapter.get('adapter_type')} run; the sharing map is for ASLoRA")
    return json.loads(report_path.read_text()), adapter


def sharing_matrix(adapter: dict) -> tuple[list[str], np.ndarray, list[list[str]]]:
    """Module types, a (types × layers) matrix of group ids (−1: not adapted), and B labels."""
    types = list(dict.fromkeys(s["module_type"] for s in adapter["slots"]))
    depth = max(s["depth"] for s in adapter["slots"]) + 1
    groups = np.full((len(types), depth), -1)
    labels = [[""] * depth for _ in types]
    # One id per B over the whole model, not per row: under merge_scope=joint a value layer can use
    # a query layer's B, and two rows must never show different B's as the same group.
    slots = sorted(adapter["slots"], key=lambda s: (types.index(s["module_type"]), s["depth"]))
    keys = list(dict.fromkeys(adapter["sharing"][f"{s['module_type']}_{s['depth']}"] for s in slots))
    for s in slots:
        key = adapter["sharing"][f"{s['module_type']}_{s['depth']}"]
        owner_type, owner_depth = key.rsplit("_", 1)
        row = types.index(s["module_type"])
        groups[row, s["depth"]] = keys.index(key)
        labels[row][s["depth"]] = owner_depth if owner_type == s["module_type"] else f"{owner_type}:{owner_depth}"
    return types, groups, labels


def plot_sharing_map(report: dict, adapter: dict, out: Path) -> Path:
    types, groups, labels = sharing_matrix(adapter)
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * groups.shape[1] + 2), 0.9 * len(types) + 1.6))
    # tab20 has 20 colours; ids repeat them beyond that, so the number in each cell is what identifies a B.
    ax.imshow(np.ma.masked_where(groups < 0, groups % 20), cmap="tab20", aspect="auto", vmin=0, vmax=19)
    for boundary in range(1, groups.shape[0]):
        ax.axhline(boundary - 0.5, color="white", linewidth=3)
    for r in range(groups.shape[0]):
        for c in range(groups.shape[1]):
            if labels[r][c]:
                ax.text(c, r, labels[r][c], ha="center", va="center", fontsize=8)
    ax.set_yticks(range(len(types)), types)
    ax.set_xticks(range(groups.shape[1]))
    ax.set_xlabel("layer (number in a cell: the layer whose B it uses)")
    after = report["params"]["after"]
    ax.set_title(f"{report['run_name']}\n{after['num_distinct_B']} distinct B's, {after['adapter']:,} adapter params "
                 f"({100 * report['params']['fraction_of_lora_after']:.1f} % of LoRA)", fontsize=9)
    fig.tight_layout()
    path = out / "sharing_map.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_timeline(report: dict, out: Path) -> Path:
    history = report["merge_history"]
    total = report["steps"]
    start = report["params"]["before"]["num_distinct_B"]
    steps = [0] + [e["step"] for e in history] + [total]
    counts = [start] + [start - i for i in range(1, len(history) + 1)] + [start - len(history)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    left.step(steps, counts, where="post")
    left.set_xlabel("optimizer step")
    left.set_ylabel("distinct B's")
    left.set_xlim(0, total)
    for group in dict.fromkeys(e["group"] for e in history):
        events = [e for e in history if e["group"] == group]
        right.plot([e["step"] for e in events], [e["distance"] for e in events], "o-", label=group)
    right.set_xlabel("optimizer step")
    right.set_ylabel(r"$\|\bar B_i - \bar B_j\|_F$ of the tied pair")
    right.set_xlim(0, total)
    if history:
        right.legend()
    fig.suptitle(report["run_name"], fontsize=9)
    fig.tight_layout()
    path = out / "merge_timeline.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--wandb-mode", default="disabled", choices=["disabled", "offline", "online"])
    args = parser.parse_args(argv)
    report, adapter = load(args.run_dir)
    out = args.out or args.run_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_sharing_map(report, adapter, out), plot_timeline(report, out)]
    for path in paths:
        print(f"wrote {path}")
    if args.wandb_mode != "disabled":
        import wandb

        with wandb.init(project="aslora", name=f"{report['run_name']}-sharing", mode=args.wandb_mode) as run:
            run.log({p.stem: wandb.Image(str(p)) for p in paths})
    return 0


if __name__ == "__main__":
    sys.exit(main())
