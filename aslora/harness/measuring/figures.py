"""Figures of one ASLoRA run, drawn from its report and saved adapter JSON: the sharing map (the
paper's Figure 3: which layers share a B at the end) and the merge timeline (distinct B's and each
tie's running-mean distance over training). ``scripts/reports/plot_sharing.py`` is the command line; a run
with wandb on logs both images too."""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

from aslora.harness.measuring.display import MODEL_NAMES, TASK_NAMES
from aslora.harness.runs.report import variant_of

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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


def save(fig, path: Path) -> Path:
    """Every figure of the project the same way: tight layout, 120 dpi, the figure closed."""
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def describe_run(report: dict) -> str:
    """``ASLoRA · SmolLM2-135M-Instruct on chatterbot dialogue pairs · seed 1`` (+ swept settings)."""
    name = f"ASLoRA · {MODEL_NAMES.get(report['model'], report['model'])} on {TASK_NAMES.get(report['task'], report['task'])}"
    swept = ",".join(
        f"{k.removeprefix('adapter.params.')}={v}"
        for k, v in sorted(variant_of(report).items())
        if k.startswith("adapter.params.")
    )
    return f"{name} · {swept + ' · ' if swept else ''}seed {report['seed']}"


def distinct_colours(n: int) -> list:
    """``n`` colours, all different, neighbours far apart in hue (a B's colour is unique at any count)."""
    cmap = plt.get_cmap("turbo")
    order = sorted(range(n), key=lambda i: ((i * 7) % n, i)) if n > 7 else list(range(n))  # spread neighbours
    positions = {i: 0.05 + 0.9 * (rank / max(n - 1, 1)) for rank, i in enumerate(order)}
    return [cmap(positions[i]) for i in range(n)]


def plot_sharing_map(report: dict, adapter: dict, out: Path) -> Path:
    """One column per module type, one row per layer (layer 0 on top); a cell's colour is its B —
    unique per B over the whole model — and its number the layer that B started in."""
    types, groups, labels = sharing_matrix(adapter)
    layers, n_types = groups.shape[1], len(types)
    colours = distinct_colours(int(groups.max()) + 1)
    image = np.ones((layers, n_types, 4))
    for t in range(n_types):
        for layer in range(layers):
            if groups[t, layer] >= 0:
                image[layer, t] = colours[groups[t, layer]]
    height = max(2.6, 0.24 * layers + 1.4)
    fig, ax = plt.subplots(figsize=(1.5 * n_types + 3.6, height))
    ax.imshow(image, aspect="auto", interpolation="nearest")
    for t in range(n_types):  # a white line where the B changes between neighbouring layers
        for layer in range(1, layers):
            if groups[t, layer] != groups[t, layer - 1]:
                ax.plot([t - 0.5, t + 0.5], [layer - 0.5, layer - 0.5], color="white", linewidth=2)
        for layer in range(layers):
            if labels[t][layer]:
                r, g, b, _ = image[layer, t]
                ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
                ax.text(
                    t, layer, labels[t][layer], ha="center", va="center", fontsize=7 if layers > 16 else 9, color=ink
                )
    for boundary in range(1, n_types):
        ax.axvline(boundary - 0.5, color="white", linewidth=4)
    ax.set_xticks(range(n_types), types)
    ax.xaxis.tick_top()
    ax.set_yticks(range(layers))
    ax.tick_params(axis="y", labelsize=7 if layers > 16 else 9)
    ax.set_ylabel("layer")
    after = report["params"]["after"]
    ax.set_xlabel(
        f"colour = one B (the number: the layer it started in)\n{after['num_distinct_B']} distinct B's, "
        f"{after['adapter']:,} adapter parameters = {100 * report['params']['fraction_of_lora_after']:.1f} % "
        f"of LoRA r={report['params'].get('lora_reference_rank', 8)}",
        fontsize=8,
    )
    ax.set_title(
        "\n".join(textwrap.wrap(f"Which layers share a B at the end — {describe_run(report)}", 46)), fontsize=9
    )
    return save(fig, out / "sharing_map.png")


def plot_timeline(report: dict, out: Path) -> Path:
    history = report["merge_history"]
    total = report["steps"]
    start = report["params"]["before"]["num_distinct_B"]
    steps = [0] + [e["step"] for e in history] + [total]
    counts = [start] + [start - i for i in range(1, len(history) + 1)] + [start - len(history)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.step(steps, counts, where="post")
    left.set_xlabel("optimizer step")
    left.set_ylabel("distinct B's")
    left.set_xlim(0, total)
    left.set_ylim(0, start * 1.08)
    left.set_title("distinct B's during training", fontsize=9)
    for group in dict.fromkeys(e["group"] for e in history):
        events = [e for e in history if e["group"] == group]
        right.plot([e["step"] for e in events], [e["distance"] for e in events], "o-", label=group)
    right.set_xlabel("optimizer step")
    right.set_ylabel(r"$\|\bar B_i - \bar B_j\|_F$ of the tied pair")
    right.set_xlim(0, total)
    right.set_ylim(bottom=0)
    right.set_title("running-mean distance of each tie", fontsize=9)
    if history:
        right.legend(fontsize=8)
    fig.suptitle(describe_run(report), fontsize=10)
    return save(fig, out / "merge_timeline.png")
