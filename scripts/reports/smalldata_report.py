"""The small-data suite's tables and learning curves (issue 24), from committed reports alone.

    python -m scripts.reports.smalldata_report [--reports results/reports] [--out results/smalldata] [--figure results/figures/smalldata_curves.png]

A run belongs to an arm of :data:`scripts.grids.smalldata.ARMS` by what its report's config *is* — the
adapter, its parameters and ``train.shared_a_lr`` compared with the arm's composed config — never
by parsing its name. Writes ``<out>/tables.md``:

* the lr stage: validation score of each (adapter, lr), one seed, the choice in bold;
* the final arms: adapter parameters at the best epoch and % of LoRA r=8, best epoch, test score at
  the best validation epoch (median, min–max and n over seeds), how many seeds were scored before
  the adapter reached its final size, and the paired differences against LoRA r=8 and LoRA r=2 on
  test (mean, 95 % t-interval, exact sign-flip p);

* the learning curves in numbers: per arm, the median curves' lowest validation loss and its epoch,
  the validation and training loss at the last epoch, the highest validation score and its epoch, and
  the score at the last epoch — how far each arm overfits, read from the same medians the figure plots;

and the figure: per-epoch training loss, validation accuracy and validation loss, median over seeds,
one line per arm — who overfits, when, and by how much.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from aslora.harness.runs.report import adapter_size_at_best, grid_of
from hydra_glue import ROOT
from scripts.grids.smalldata import ARMS, CONFIRM_DEPTH_SEEDS, DEPTH_GRID, DEPTH_MODEL, FINAL_GRID, LR_GRID, Arm
from scripts.reports.scores import DIRTY_NOTE, dirty_suffix
from scripts.reports.stats import format_median, format_paired, paired

REFERENCES = ("LoRA r=8", "LoRA r=2 (ASLoRA's size)")


def _identity(config: dict) -> tuple:
    """What makes an arm: the adapter, all its parameters, and whether A has its own lr."""
    return (
        config["adapter"]["name"],
        json.dumps(config["adapter"]["params"], sort_keys=True),
        config["train"].get("shared_a_lr") is not None,
    )


def arm_identities(arms: tuple[Arm, ...] = ARMS, extra: tuple[str, ...] = ()) -> dict[tuple, str]:
    """Each arm's identity as its command composes (``extra``: e.g. the depth stage's model)."""
    from hydra_glue import compose_run

    return {_identity(compose_run([*arm.commands(1e-3, 1), *extra])[0]): arm.label for arm in arms}


def read_reports(directory: Path, prefix: str, from_runs: bool = False) -> list[dict]:
    """The finished reports of grid ``prefix``: ``<directory>/<prefix>_*.json`` (``results/reports``),
    or with ``from_runs`` ``<directory>/<prefix>_*/report.json`` (an ``experiments/`` folder)."""
    pattern = f"{prefix}_*/report.json" if from_runs else f"{prefix}_*.json"
    reports = [json.loads(p.read_text()) for p in sorted(directory.glob(pattern))]
    return [r for r in reports if r.get("status") == "done" and grid_of(r) == prefix]


def by_arm(reports: list[dict], identities: dict[tuple, str]) -> dict[str, list[dict]]:
    arms: dict[str, list[dict]] = defaultdict(list)
    for report in reports:
        label = identities.get(_identity(report["config"]))
        if label is not None:
            arms[label].append(report)
    return arms


def _test(report: dict) -> float:
    return 100 * report["best"]["test"][report["main_metric"]]


def final_table(arms: dict[str, list[dict]]) -> list[str]:
    """One row per arm: the adapter's size at the scored (best validation) epoch, how many seeds were
    scored before the adapter reached its final size, and test at the best epoch with the paired
    differences against the two LoRA references (``scripts/reports/stats.py``: mean [95 % t-interval] (n, exact
    sign-flip p); below 5 seeds the differences themselves)."""
    lines = [
        "| arm | adapter params at best epoch (median) | % of LoRA r=8 | seeds scored before the final size | "
        "best epoch (median) | test acc ×100 at best: median (min–max, n) | − LoRA r=8 (paired) | "
        "− LoRA r=2 (paired) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    reference = {label: {r["seed"]: _test(r) for r in arms.get(label, [])} for label in REFERENCES}
    for arm in ARMS:
        runs = arms.get(arm.label)
        if not runs:
            continue
        tests = [_test(r) for r in runs]
        size = int(np.median([adapter_size_at_best(r) for r in runs]))
        fraction = 100 * size / runs[0]["params"]["lora_reference"]
        early = sum(adapter_size_at_best(r) > r["params"]["after"]["adapter"] for r in runs)
        differences = []
        for label in REFERENCES:
            if label == arm.label or not set(reference[label]) & {r["seed"] for r in runs}:
                differences.append("—")
            else:
                differences.append(format_paired(paired({r["seed"]: _test(r) for r in runs}, reference[label])))
        lines.append(
            f"| {arm.label}{dirty_suffix([r['environment'].get('git_dirty') for r in runs])} | {size:,} | "
            f"{fraction:.1f} | {early} of {len(runs)} | "
            f"{np.median([r['best']['epoch'] for r in runs]):g} | {format_median(tests)} | "
            f"{differences[0]} | {differences[1]} |"
        )
    return lines


def lr_table(reports: list[dict]) -> list[str]:
    """Validation accuracy ×100 at the best epoch per arm and lr (seed 1), the best of each arm in
    bold; an arm is known by its config (:func:`by_arm`), so the ASLoRA variants' own lr stages
    (``python -m scripts.grids.staged smalldata arm-lr``) each get their row."""
    arms = by_arm(reports, arm_identities())
    scores = {
        label: {r["config"]["train"]["lr"]: 100 * r["best"]["metric"] for r in runs} for label, runs in arms.items()
    }
    lrs = sorted({lr for s in scores.values() for lr in s})
    lines = ["| arm | " + " | ".join(f"lr {lr:g}" for lr in lrs) + " |", "|---|" + "---|" * len(lrs)]
    for arm in ARMS:
        if arm.label not in scores:
            continue
        row = scores[arm.label]
        best = max(row.values())
        cells = [
            ("**{:.1f}**" if row.get(lr) == best else "{:.1f}").format(row[lr]) if lr in row else "—" for lr in lrs
        ]
        lines.append(f"| {arm.label} | " + " | ".join(cells) + " |")
    return lines


def hardware(reports: list[dict]) -> str:
    """The machines ``reports`` ran on, each with its run count: the grid moves between sittings."""
    devices = Counter(r["environment"]["device"] for r in reports)
    return "; ".join(f"{name} ({n} runs)" for name, n in sorted(devices.items()))


def curves(arms: dict[str, list[dict]]) -> dict[str, dict[str, np.ndarray]]:
    """Per arm, the median over seeds of each per-epoch series (epochs every seed has)."""
    out = {}
    for label, runs in arms.items():
        epochs = min(len(r["epochs"]) for r in runs)
        series = {
            "train loss": [[e["train_loss"] for e in r["epochs"][:epochs]] for r in runs],
            "validation accuracy ×100": [[100 * e["val"]["accuracy"] for e in r["epochs"][:epochs]] for r in runs],
        }
        if all("loss" in e["val"] for r in runs for e in r["epochs"][:epochs]):
            series["validation loss"] = [[e["val"]["loss"] for e in r["epochs"][:epochs]] for r in runs]
        out[label] = {k: np.median(np.asarray(v, dtype=float), axis=0) for k, v in series.items()}
    return out


def curve_table(arms: dict[str, list[dict]], medians: dict[str, dict[str, np.ndarray]]) -> list[str]:
    """The figure's median curves (``medians``, from :func:`curves`) at the points that say who
    overfits: where validation loss bottoms out and where it ends, where validation accuracy peaks and
    where it ends."""
    lines = [
        "| arm | seeds | val loss: lowest (epoch) | val loss, last epoch | train loss, last epoch | "
        "val acc ×100: highest (epoch) | val acc ×100, last epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        if arm.label not in medians:
            continue
        m = medians[arm.label]
        accuracy = m["validation accuracy ×100"]
        loss = m.get("validation loss")
        low = f"{loss.min():.2f} ({int(loss.argmin()) + 1})" if loss is not None else "—"
        last = f"{loss[-1]:.2f}" if loss is not None else "—"
        lines.append(
            f"| {arm.label} | {len(arms[arm.label])} | {low} | {last} | {m['train loss'][-1]:.3f} | "
            f"{accuracy.max():.1f} ({int(accuracy.argmax()) + 1}) | {accuracy[-1]:.1f} |"
        )
    return lines


def plot(arms: dict[str, list[dict]], medians: dict[str, dict[str, np.ndarray]], machines: str, path: Path) -> None:
    """The learning-curve figure: one panel per series of ``medians`` (from :func:`curves`), one line
    per arm; ``machines`` (from :func:`hardware`) names the machines the runs came from."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["train loss", "validation accuracy ×100", "validation loss"]
    panels = [p for p in panels if any(p in m for m in medians.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.4))
    styles = {
        arm.label: (f"C{i}", "-" if arm.adapter == "lora" else "--" if i > 3 else "-") for i, arm in enumerate(ARMS)
    }
    for ax, panel in zip(np.atleast_1d(axes), panels, strict=True):
        for arm in ARMS:
            if arm.label in medians and panel in medians[arm.label]:
                values = medians[arm.label][panel]
                colour, line = styles[arm.label]
                ax.plot(
                    np.arange(1, len(values) + 1),
                    values,
                    line,
                    color=colour,
                    lw=1.6,
                    label=f"{arm.label} ({len(arms[arm.label])})",
                )
        ax.set_title(panel)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    paper = arms.get("ASLoRA, paper schedule")
    if paper:  # where the paper-proportioned ties happen, in epochs
        per_epoch = paper[0]["steps"] / len(paper[0]["epochs"])
        for ax in np.atleast_1d(axes):
            ax.axvspan(
                paper[0]["merge_history"][0]["step"] / per_epoch,
                paper[0]["merge_history"][-1]["step"] / per_epoch,
                color="grey",
                alpha=0.12,
                lw=0,
            )
    np.atleast_1d(axes)[0].legend(fontsize=7, title="arm (seeds)", title_fontsize=7)
    run = next(iter(arms.values()))[0]
    fig.suptitle(
        f"Small-data suite: {run['model']} on {run['task']} ({run['train_examples']:,} examples, batch "
        f"{run['config']['train']['batch_size']}, {len(run['epochs'])} epochs); median over seeds. "
        f"Grey: the paper-schedule ties.\n{machines}",
        fontsize=9,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=Path, default=ROOT / "results" / "reports")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "smalldata")
    parser.add_argument("--figure", type=Path, default=ROOT / "results" / "figures" / "smalldata_curves.png")
    args = parser.parse_args(argv)
    lr_reports, final_reports = read_reports(args.reports, LR_GRID), read_reports(args.reports, FINAL_GRID)
    if not lr_reports and not final_reports:
        raise SystemExit(
            f"no small-data runs in {args.reports}: run `make protocol-smalldata` (or its stages) "
            f"and `make collect` first"
        )
    arms = by_arm(final_reports, arm_identities())
    depth_reports = read_reports(args.reports, DEPTH_GRID)
    depth = by_arm(depth_reports, arm_identities(ARMS[:3], (f"model={DEPTH_MODEL}",))) if depth_reports else {}
    device = hardware([*lr_reports, *final_reports, *depth_reports])
    lines = [
        "<!-- generated by scripts/reports/smalldata_report.py from results/reports; do not edit -->",
        f"Small-data suite (issue 24); hardware: {device}. Commands: `make protocol-smalldata` "
        f"(stages: `python -m scripts.grids.staged smalldata lr|select|extend|final`).",
        "",
        f"Learning rates (validation accuracy ×100 at the best epoch, seed 1; runs so far: {len(lr_reports)}):",
        "",
        *lr_table(lr_reports),
        "",
    ]
    if arms:
        medians = curves(arms)
        missing = [
            f"{arm.label} ({5 - len(arms.get(arm.label, []))})" for arm in ARMS if len(arms.get(arm.label, [])) < 5
        ]
        lines += [
            "Final arms (exploratory, seeds 1–5), test at the best validation epoch; paired differences by "
            "seed as mean [95 % t-interval] (n, exact sign-flip p); a sign-flip p cannot go below 2/2ⁿ = "
            "0.0625 at n = 5, so no difference here can be significant at 0.05 (the preregistered "
            f"confirmatory study, `PREREGISTRATION.md`, is sized for that). {DIRTY_NOTE}",
            "",
            *final_table(arms),
            "",
            f"Learning curves in numbers (the median over seeds of each per-epoch series, as "
            f"`{args.figure.name}` plots them; epochs from 1):",
            "",
            *curve_table(arms, medians),
            "",
        ]
        if missing:
            lines += [f"PARTIAL: seeds still to run — {', '.join(missing)}.", ""]
        plot(arms, medians, hardware(sum(arms.values(), [])), args.figure)
        print(f"wrote {args.figure}")
    if depth:
        minutes = "; ".join(
            f"{label} " + ", ".join(f"{r['wall_seconds'] / 60:.0f}" for r in runs) + " min"
            for label, runs in depth.items()
        )
        seeds_by_commit: dict[str, set[int]] = defaultdict(set)
        for r in sum(depth.values(), []):
            seeds_by_commit[(r["environment"].get("git_sha") or "unrecorded")[:7]].add(r["seed"])
        commits = "; ".join(
            f"`{sha}`: seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, sorted(seeds)))}"
            for sha, seeds in sorted(seeds_by_commit.items(), key=lambda kv: min(kv[1]))
        )
        lines += [
            f"Depth (descriptive: the plan attaches no word to it): the first three arms on {DEPTH_MODEL} "
            f"(12 layers, RoBERTa-base's shapes) at MiniLM-L6's lrs (`python -m scripts.grids.staged smalldata "
            f"depth`, then the confirmatory grid's `confirm-depth` stage); runs by commit: {commits}; wall time "
            f"per run: {minutes}:",
            "",
            *final_table(depth),
            "",
        ]
        # the stage's status, from the reports (README's prose points here instead of typing it): seeds 1-2
        # of the exploratory depth stage, then the confirmatory grid's
        planned = range(1, max(CONFIRM_DEPTH_SEEDS) + 1)
        short = []
        for arm in ARMS[:3]:
            seeds = sorted(set(planned) - {r["seed"] for r in depth.get(arm.label, [])})
            if seeds:
                short.append(f"{arm.label} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})")
        if short:
            lines += [f"PARTIAL: depth seeds still to run — {', '.join(short)}.", ""]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tables.md").write_text("\n".join(lines))
    print(f"wrote {args.out / 'tables.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
