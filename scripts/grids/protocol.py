"""The comparison protocol (issue 14): every adapter at its own lr on two classification tasks and an
instruction task, then ASLoRA's size curves — two staged suites of :mod:`scripts.grids.staged`.

    python -m scripts.grids.staged protocol lr        # stage 1: every adapter over its lr grid, one seed
    python -m scripts.grids.staged protocol select    # results/runs.csv → results/protocol/chosen_lr.csv
    python -m scripts.grids.staged protocol extend    # lrs beyond a grid's edge until the choice lies inside
    python -m scripts.grids.staged protocol final     # stage 2: 5 seeds per task × adapter at its chosen lr
    python -m scripts.grids.staged protocol curves    # stage 3: ASLoRA's size curves, LoRA's ranks; 3 seeds
    python -m scripts.grids.staged protocol plan      # print the commands of every stage, run nothing

Two suites: ``protocol`` (MiniLM-L6 on rt_polarity and bbc_news, ``configs/sweep/protocol_{lr,final}.yaml``)
and ``protocol-instruct`` (SmolLM2-135M-Instruct on the chatterbot pairs, held-out loss, 3 seeds,
``configs/sweep/protocol_instruct_{lr,final}.yaml``; no size curves). They share one
``results/protocol/chosen_lr.csv``: ``select`` reads both suites' lr grids.

``make protocol`` runs them with ``make collect`` between the stages. The lr of every final run comes
from ``chosen_lr.csv``, which records the grid it was chosen from and the validation score that chose
it; the thresholds of stage 3 are quantiles of the tie distances the final ASLoRA runs recorded, so
each of them binds (a threshold above every distance would change nothing).
"""

from __future__ import annotations

from dataclasses import dataclass

from scripts.grids.lr_search import variant_overrides
from scripts.grids.stages import EXTEND, SELECT, StagedSuite, StageRun, train_stage

VERA_LRS = "1e-3,4e-3,1e-2"


def _lr_stage(sweep: str, other_adapters: str) -> list[list[str]]:
    """The lr stage's multiruns, the main comparison (LoRA, ASLoRA, LoRA at ASLoRA's size) first."""
    stage = [
        [f"sweep={sweep}", "adapter=lora,aslora"],
        # LoRA at the rank nearest ASLoRA's final size (MiniLM-L6: 18,432 vs 15,360; SmolLM2: 115,200
        # vs 109,056; tests/scripts/grids/test_protocol.py derives it from the closed-form counts)
        [f"sweep={sweep}", "adapter=lora", "adapter.params.r=2"],
    ]
    if other_adapters:
        stage.append([f"sweep={sweep}", f"adapter={other_adapters}"])
    return stage + [[f"sweep={sweep}", "adapter=vera", f"train.lr={VERA_LRS}"]]  # VeRA's own range


@dataclass(frozen=True)
class Sweeps:
    """One protocol suite's sweep configs, grid names and tasks."""

    lr_sweep: str  # configs/sweep/<lr_sweep>.yaml
    lr_grid: str  # its run_prefix, as runs.csv's `grid` column reads it
    final_sweep: str
    final_grid: str
    tasks: tuple
    other_adapters: str  # beyond LoRA, ASLoRA, LoRA r=2 and VeRA

    @property
    def lr_stage(self) -> list[list[str]]:
        return _lr_stage(self.lr_sweep, self.other_adapters)


SWEEPS = {
    "protocol": Sweeps(
        "protocol_lr", "protocol-lr", "protocol_final", "protocol", ("rt_polarity", "bbc_news"), "sharelora,tiedlora"
    ),
    "protocol-instruct": Sweeps(
        "protocol_instruct_lr",
        "protocol-instruct-lr",
        "protocol_instruct_final",
        "protocol-instruct",
        ("instruct",),
        "",
    ),
}
LR_GRIDS = tuple(s.lr_grid for s in SWEEPS.values())
FINAL_GRIDS = tuple(s.final_grid for s in SWEEPS.values())
LR_SWEEP = {task: f"sweep={s.lr_sweep}" for s in SWEEPS.values() for task in s.tasks}
TASKS = SWEEPS["protocol"].tasks  # the size curves' tasks
# 4 is the shipped default, run in stage 2; 0 (global A, every B kept) separates what sharing A costs
# from what the ties cost
CURVE_MAX_MERGES = "0,1,2,3,5"
CURVE_LORA_RANKS = "1,4"  # 2 and 8 are run in stage 2
CURVE_SEEDS = "seed=1,2,3"  # a curve's points are read together: 3 seeds each keeps stage 3 to 60 runs


FINAL_ORDER = [("aslora", ""), ("lora", ""), ("lora", "r=2"), ("tiedlora", ""), ("sharelora", ""), ("vera", "")]


def final_commands(chosen: list[dict], suite: str | None = None) -> list[list[str]]:
    """One 5-seed multirun per (task, adapter) at its chosen lr; ASLoRA, LoRA and LoRA r=2 first on
    every task, so a protocol stopped part-way has answered the main comparison. ``suite`` (a key of
    :data:`SWEEPS`): only that suite's tasks."""

    def priority(row: dict) -> tuple:
        key = (row["adapter"], row["variant"])
        return (FINAL_ORDER.index(key) if key in FINAL_ORDER else len(FINAL_ORDER), row["task"])

    final_sweep = {task: s.final_sweep for name, s in SWEEPS.items() if suite in (None, name) for task in s.tasks}
    commands = []
    for row in sorted(chosen, key=priority):
        if row["task"] not in final_sweep:
            continue
        commands.append(
            [
                f"sweep={final_sweep[row['task']]}",
                f"task={row['task']}",
                f"adapter={row['adapter']}",
                *variant_overrides(row),
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
            "no tie distances recorded yet: run `python -m scripts.grids.staged protocol final` and `make collect` first"
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


def _curves(run: StageRun) -> list[list[str]]:
    # the size curves' thresholds come from the final ASLoRA runs' tie distances (not the curves' own)
    reports = [r for r in run.space.sharing_reports("protocol_*_aslora_*") if "adapter.params" not in r["run_name"]]
    return curve_commands(run.chosen(), reports)


def _suite(name: str, description: str, curves: bool) -> StagedSuite:
    sweeps = SWEEPS[name]
    stages = (
        train_stage("lr", lambda run: sweeps.lr_stage, "every adapter over its lr grid, one seed"),
        SELECT,
        EXTEND,
        train_stage(
            "final", lambda run: final_commands(run.chosen(), name), "every task × adapter at its chosen lr, all seeds"
        ),
    )
    if curves:
        stages += (train_stage("curves", _curves, "ASLoRA's size curves (max_merges, threshold), LoRA's ranks"),)
    return StagedSuite(name, description, "protocol", LR_GRIDS, LR_SWEEP, stages)


CLASSIFICATION = _suite("protocol", "MiniLM-L6 on rt_polarity and bbc_news (make protocol)", curves=True)
INSTRUCT = _suite("protocol-instruct", "SmolLM2-135M-Instruct on the chatterbot pairs (make protocol-instruct)", False)
