"""The comparison protocol (issue 14), stage by stage, restartable (finished runs are skipped).

    python -m scripts.protocol lr        # stage 1: every adapter over its lr grid, one seed
    python -m scripts.protocol select    # results/runs.csv → results/protocol/chosen_lr.csv (best validation)
    python -m scripts.protocol extend    # lrs beyond a grid's edge where the choice sits on it, until it lies inside
    python -m scripts.protocol final     # stage 2: 5 seeds per task × adapter at its chosen lr
    python -m scripts.protocol curves    # stage 3: ASLoRA's size curves (max_merges, distance threshold), LoRA's ranks; 3 seeds
    python -m scripts.protocol plan      # print the commands of every stage, run nothing

Two suites: ``--suite classification`` (the default: MiniLM-L6 on rt_polarity and bbc_news,
``configs/sweep/protocol_{lr,final}.yaml``) and ``--suite instruct`` (SmolLM2-135M-Instruct on the
chatterbot pairs, held-out loss, 3 seeds, ``configs/sweep/protocol_instruct_{lr,final}.yaml``; no
size curves). ``select`` reads both suites' grids.

``make protocol`` runs all of them with ``make collect`` between the stages. Before a stage trains,
the finished runs committed under ``results/reports/`` are restored into ``experiments/``
(``collect_results --restore``), so a fresh clone or a new worktree continues the protocol
instead of repeating it. The lr of every final
run comes from ``chosen_lr.csv``, which records the grid it was chosen from and the validation
score that chose it; the thresholds of stage 3 are quantiles of the tie distances the final ASLoRA
runs recorded, so each of them binds (a threshold above every distance would change nothing).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aslora.harness.metrics import LOWER_IS_BETTER
from scripts.workspace import Workspace, read_runs

VERA_LRS = "1e-3,4e-3,1e-2"


def _lr_stage(sweep: str, other_adapters: str) -> list[list[str]]:
    """The lr stage's multiruns, the main comparison (LoRA, ASLoRA, LoRA at ASLoRA's size) first."""
    stage = [
        [f"sweep={sweep}", "adapter=lora,aslora"],
        # LoRA at the rank nearest ASLoRA's final size (MiniLM-L6: 18,432 vs 15,360; SmolLM2: 115,200
        # vs 109,056; tests/scripts/test_protocol.py derives it from the closed-form counts)
        [f"sweep={sweep}", "adapter=lora", "adapter.params.r=2"],
    ]
    if other_adapters:
        stage.append([f"sweep={sweep}", f"adapter={other_adapters}"])
    return stage + [[f"sweep={sweep}", "adapter=vera", f"train.lr={VERA_LRS}"]]  # VeRA's own range


@dataclass(frozen=True)
class Suite:
    lr_sweep: str  # configs/sweep/<lr_sweep>.yaml
    lr_grid: str  # its run_prefix, as runs.csv's `grid` column reads it
    final_sweep: str
    final_grid: str
    tasks: tuple
    other_adapters: str  # beyond LoRA, ASLoRA, LoRA r=2 and VeRA

    @property
    def lr_stage(self) -> list[list[str]]:
        return _lr_stage(self.lr_sweep, self.other_adapters)


SUITES = {
    "classification": Suite(
        "protocol_lr", "protocol-lr", "protocol_final", "protocol", ("rt_polarity", "bbc_news"), "sharelora,tiedlora"
    ),
    "instruct": Suite(
        "protocol_instruct_lr",
        "protocol-instruct-lr",
        "protocol_instruct_final",
        "protocol-instruct",
        ("instruct",),
        "",
    ),
}
LR_GRIDS = tuple(s.lr_grid for s in SUITES.values())
FINAL_GRIDS = tuple(s.final_grid for s in SUITES.values())
TASKS = SUITES["classification"].tasks  # the size curves' tasks
# 4 is the shipped default, run in stage 2; 0 (global A, every B kept) separates what sharing A costs
# from what the ties cost
CURVE_MAX_MERGES = "0,1,2,3,5"
CURVE_LORA_RANKS = "1,4"  # 2 and 8 are run in stage 2
CURVE_SEEDS = "seed=1,2,3"  # a curve's points are read together: 3 seeds each keeps stage 3 to 60 runs


def select(rows: list[dict], grids: tuple = LR_GRIDS) -> list[dict]:
    """Per (task, adapter, variant) of the lr grids ``grids``: the lr with the best validation score
    (ties: the smaller lr), with the grid it came from, and ``edge``: ``top``/``bottom`` when the
    choice sits at that end of its grid, ``flat`` when every lr scored the same (so nothing was chosen)."""
    groups: dict = defaultdict(list)
    for row in rows:
        if row["grid"] in grids:
            groups[(row["task"], row["adapter"], row["variant"])].append(row)
    chosen = []
    for (task, adapter, variant), runs in sorted(groups.items()):
        sign = 1 if runs[0]["main_metric"] in LOWER_IS_BETTER else -1
        best = min(runs, key=lambda r: (sign * float(r["best_metric"]), float(r["lr"])))
        grid = sorted({r["lr"] for r in runs}, key=float)
        if len(grid) < 2:
            edge = ""
        elif len({r["best_metric"] for r in runs}) == 1:
            edge = "flat"  # every lr scores the same (e.g. the majority class throughout): nothing chose
        else:
            edge = {grid[-1]: "top", grid[0]: "bottom"}.get(best["lr"], "")
        chosen.append(
            {
                "task": task,
                "adapter": adapter,
                "variant": variant,
                "lr": best["lr"],
                "validation": best["best_metric"],
                "main_metric": best["main_metric"],
                "grid": ",".join(grid),
                "edge": edge,
                "runs": ";".join(r["run_name"] for r in sorted(runs, key=lambda r: float(r["lr"]))),
            }
        )
    return chosen


def _variant_overrides(row: dict) -> list[str]:
    """A row's size variant (``"r=2"``) as the overrides that make it (``adapter.params.r=2``)."""
    return [f"adapter.params.{part}" for part in row["variant"].split(",") if part]


LR_LIMITS = (1e-5, 0.1)  # an edge beyond these is reported, not extended


def next_lr(lr: float, direction: str) -> float:
    """The next value beyond a grid's edge on the 1–3 half-decade ladder the grids use:
    up 3e-3 → 1e-2 → 3e-2, down 1e-3 → 3e-4 → 1e-4 (VeRA's 4e-3 → 1e-3 when going down)."""
    exponent = math.floor(math.log10(lr) + 1e-9)
    mantissa = lr / 10**exponent
    if direction == "top":
        value = 3 * 10**exponent if mantissa < 3 - 1e-9 else 10 ** (exponent + 1)
    else:
        value = 10**exponent if mantissa > 1 + 1e-9 else 3 * 10 ** (exponent - 1)
    return float(f"{value:.3g}")


def extension_commands(chosen: list[dict], lr_sweep: dict[str, str] | None = None) -> list[list[str]]:
    """A chosen lr at the edge of its grid may not be the best: one more run beyond that edge
    (then ``collect`` and ``select`` again). Repeat until no choice sits at an edge. ``lr_sweep``:
    task → the ``sweep=…`` override of its lr grid (default: the suites of this module)."""
    if lr_sweep is None:
        lr_sweep = {task: f"sweep={s.lr_sweep}" for s in SUITES.values() for task in s.tasks}
    commands = []
    for row in chosen:
        if not row.get("edge") or row["task"] not in lr_sweep:
            continue
        grid = [float(v) for v in row["grid"].split(",")]
        # a flat grid goes up: a model that did not move at any lr needs a larger step (one that
        # diverged everywhere would go up to LR_LIMITS and stay flagged, as the table then shows)
        direction = "top" if row["edge"] == "flat" else row["edge"]
        lr = next_lr(max(grid) if direction == "top" else min(grid), direction)
        if not LR_LIMITS[0] <= lr <= LR_LIMITS[1]:
            where = (
                "every lr scored the same"
                if row["edge"] == "flat"
                else f"best lr {row['lr']} at the {row['edge']} edge"
            )
            print(
                f"# {row['task']} {row['adapter']} {row['variant']}: {where}; {lr:g} is outside {LR_LIMITS}, not run",
                flush=True,
            )
            continue
        commands.append(
            [
                lr_sweep[row["task"]],
                f"task={row['task']}",
                f"adapter={row['adapter']}",
                *_variant_overrides(row),
                f"train.lr={lr:g}",
            ]
        )
    return commands


MAX_EXTENSION_ROUNDS = 3  # 1e-2 → 3e-2 → 0.1 is as far as a top edge can go within LR_LIMITS


def extend_until_inside(
    current_rows: Callable[[], list[dict]],
    train: Callable[[list[str]], None],
    rounds: int = MAX_EXTENSION_ROUNDS,
    grids: tuple = LR_GRIDS,
    lr_sweep: dict[str, str] | None = None,
) -> list[dict]:
    """Extend every grid whose choice sits at an edge, re-select, and repeat until every choice lies
    inside its grid (or ``rounds`` are spent, or the next lr is beyond ``LR_LIMITS``): one extra lr
    can move the best to the new edge, and a choice at an edge says only "at least this far".
    ``current_rows`` returns the runs after training (in ``main``: ``collect``, then ``runs.csv``)."""
    chosen = select(current_rows(), grids)
    for _ in range(rounds):
        commands = extension_commands(chosen, lr_sweep)
        if not commands:
            break
        for overrides in commands:
            train(overrides)
        chosen = select(current_rows(), grids)
    return chosen


FINAL_ORDER = [("aslora", ""), ("lora", ""), ("lora", "r=2"), ("tiedlora", ""), ("sharelora", ""), ("vera", "")]


def final_commands(chosen: list[dict], suite: str | None = None) -> list[list[str]]:
    """One 5-seed multirun per (task, adapter) at its chosen lr; ASLoRA, LoRA and LoRA r=2 first on
    every task, so a protocol stopped part-way has answered the main comparison. ``suite``: only
    that suite's tasks."""

    def priority(row: dict) -> tuple:
        key = (row["adapter"], row["variant"])
        return (FINAL_ORDER.index(key) if key in FINAL_ORDER else len(FINAL_ORDER), row["task"])

    final_sweep = {task: s.final_sweep for name, s in SUITES.items() if suite in (None, name) for task in s.tasks}
    commands = []
    for row in sorted(chosen, key=priority):
        if row["task"] not in final_sweep:
            continue
        commands.append(
            [
                f"sweep={final_sweep[row['task']]}",
                f"task={row['task']}",
                f"adapter={row['adapter']}",
                *_variant_overrides(row),
                f"train.lr={row['lr']}",
            ]
        )
    return commands


def thresholds(reports: list[dict], quantiles=(0.25, 0.5, 0.75)) -> list[float]:
    """Quantiles of the tie distances recorded by the final ASLoRA runs (rounded to 3 significant
    digits): each blocks the ties above it, so each value of the sweep changes what happens."""
    import numpy as np

    distances = [e["distance"] for r in reports for e in r["merge_history"]]
    if not distances:
        raise SystemExit(
            "no tie distances recorded yet: run `python -m scripts.protocol final` and `make collect` first"
        )
    return [float(f"{q:.3g}") for q in np.quantile(distances, quantiles)]


def curve_commands(chosen: list[dict], reports: list[dict]) -> list[list[str]]:
    lr = {(r["task"], r["adapter"], r["variant"]): r["lr"] for r in chosen}
    commands = []
    for task in TASKS:
        if (task, "aslora", "") in lr:
            base = [
                "sweep=protocol_final",
                f"task={task}",
                "adapter=aslora",
                f"train.lr={lr[task, 'aslora', '']}",
                CURVE_SEEDS,
            ]
            commands.append([*base, f"adapter.params.max_merges={CURVE_MAX_MERGES}"])
            task_reports = [r for r in reports if r["task"] == task]
            if task_reports:
                values = ",".join(str(t) for t in thresholds(task_reports))
                commands.append([*base, f"adapter.params.merge_distance_threshold={values}"])
        if (task, "lora", "") in lr:
            commands.append(
                [
                    "sweep=protocol_final",
                    f"task={task}",
                    "adapter=lora",
                    f"train.lr={lr[task, 'lora', '']}",
                    CURVE_SEEDS,
                    f"adapter.params.r={CURVE_LORA_RANKS}",
                ]
            )
    return commands


def write_chosen(chosen: list[dict], source: Path, path: Path, grids: tuple = LR_GRIDS) -> None:
    """``chosen_lr.csv`` from ``select``'s rows (read from ``source``), each choice printed."""
    if not chosen:
        raise SystemExit(f"no runs of an lr grid ({', '.join(grids)}) in {source}: run the lr stage and `make collect`")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(chosen[0]))
        writer.writeheader()
        writer.writerows(chosen)
    for row in chosen:
        edge = {"": "", "flat": "; flat, every lr scored the same: `extend` goes up"}.get(
            row["edge"], f"; at the {row['edge']} edge: `extend`"
        )
        print(
            f"{row['task']:<12} {row['adapter']:<10} {row['variant'] or '':<6} lr {row['lr']:<8} "
            f"(validation {row['main_metric']} {float(row['validation']):.4f}; grid {row['grid']}{edge})"
        )
    print(f"wrote {Workspace().show(path)}")


def read_chosen(path: Path, how: str = "`python -m scripts.protocol lr`") -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path} not found: run {how}, `make collect`, then `select`")
    return read_runs(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["lr", "select", "extend", "final", "curves", "plan"])
    parser.add_argument(
        "--runs", type=Path, default=None, help="the runs select reads (default: <root>/results/runs.csv)"
    )
    parser.add_argument(
        "--suite",
        choices=sorted(SUITES),
        default="classification",
        help="which suite's lr and final stages run (select reads every suite; curves: classification)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the train.py commands, run nothing")
    parser.add_argument(
        "--root", type=Path, default=None, help="a scratch folder for experiments/ and results/ (nothing restored)"
    )
    parser.add_argument("overrides", nargs="*", help="extra overrides for every train.py call (with --root)")
    args = parser.parse_intermixed_args(argv)
    if args.overrides and args.root is None:
        raise SystemExit(f"extra overrides {args.overrides} need --root: they would mix with committed results")
    space = Workspace.scratch(args.root, args.overrides) if args.root else Workspace()
    return run_stage(args.stage, space, args.suite, args.dry_run, args.runs)


def run_stage(
    stage: str, space: Workspace, suite_name: str = "classification", dry_run: bool = False, runs=None
) -> int:
    """One stage of the protocol in ``space`` (``plan``: print every stage's commands)."""
    suite, chosen_path = SUITES[suite_name], space.chosen("protocol")
    runs = runs or space.runs
    dry = dry_run or stage == "plan"
    if stage in ("lr", "extend", "final", "curves") and not dry:
        space.restore_committed_runs()
    if stage in ("lr", "plan"):
        for overrides in suite.lr_stage:
            space.train(overrides, dry)
        if stage == "lr":
            return 0
    if stage == "select":
        write_chosen(select(read_runs(runs)), runs, chosen_path)
        return 0
    if stage == "extend":
        if dry_run:  # one round: later rounds depend on the scores of this one
            for overrides in extension_commands(read_chosen(chosen_path)):
                space.train(overrides, dry_run=True)
            return 0
        write_chosen(extend_until_inside(space.collect, lambda o: space.train(o, dry_run=False)), runs, chosen_path)
        return 0
    if stage in ("final", "plan"):
        if stage == "plan" and not chosen_path.is_file():
            print(f"# final and curves: after `select` (they need {space.show(chosen_path)})")
            return 0
        for overrides in final_commands(read_chosen(chosen_path), suite_name):
            space.train(overrides, dry)
        if stage == "final" or suite_name != "classification":
            return 0
    # the size curves' thresholds come from the final ASLoRA runs' tie distances (not the curves' own)
    reports = [r for r in space.sharing_reports("protocol_*_aslora_*") if "adapter.params" not in r["run_name"]]
    for overrides in curve_commands(read_chosen(chosen_path), reports):
        space.train(overrides, dry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
