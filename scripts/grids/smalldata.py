"""The small-data suite (issue 24): the paper's claims tested in the paper's own regime — a staged
suite of :mod:`scripts.grids.staged`, restartable.

    python -m scripts.grids.staged smalldata lr        # stage 1: LoRA r=8, LoRA r=2, ASLoRA over the lr grid, one seed
    python -m scripts.grids.staged smalldata select    # results/runs.csv → results/smalldata/chosen_lr.csv
    python -m scripts.grids.staged smalldata extend    # lrs beyond a grid's edge where the choice sits on it
    python -m scripts.grids.staged smalldata final     # stage 2: every arm × 5 seeds, seed by seed
    python -m scripts.grids.staged smalldata depth     # stage 3: the three main arms on mpnet-base (12 layers)
    python -m scripts.grids.staged smalldata arm-lr    # the confirmatory study: each other arm's own lr
    python -m scripts.grids.staged smalldata confirm   # its fresh seeds (results/smalldata/PREREGISTRATION.md)
    python -m scripts.grids.staged smalldata confirm-depth
    python -m scripts.grids.staged smalldata plan      # print every command, run nothing

The regime (``configs/sweep/smalldata_{lr,final}.yaml``): 1,000 rt_polarity examples, batch 16,
30 epochs, validation every epoch — small data and many epochs, where LoRA overfits, as on GLUE's
small tasks (ASLoRA's MRPC row: 3,668 examples, batch 16, 30 epochs). The arms, in the order the
final stage runs them, are :data:`ARMS`; ``scripts/reports/smalldata_report.py`` turns the runs into
the suite's table and learning-curve figure.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from scripts.grids.lr_search import LR_LIMITS, next_lr
from scripts.grids.stages import EXTEND, SELECT, NotYet, Stage, StagedSuite, StageRun, train_stage

LR_SWEEP, LR_GRID = "smalldata_lr", "smalldata-lr"
FINAL_SWEEP, FINAL_GRID = "smalldata_final", "smalldata"
TASK = "rt_polarity"
SUITE = "smalldata"  # results/smalldata/chosen_lr.csv
SEEDS = (1, 2, 3, 4, 5)
# Depth: the paper ran RoBERTa-base's 12 layers (7 ties per type); mpnet-base has its shapes and real
# weights offline (`make assets-mpnet`) but costs about 8x MiniLM-L6 a token. Its runs get their own
# grid name, so they never mix with MiniLM's arms; they reuse MiniLM's chosen lrs (no lr stage: that
# would cost the suite again). One seed of the three main arms is the pilot; `--seeds` adds more.
DEPTH_MODEL, DEPTH_GRID = "mpnet-base", "smalldata-depth"
DEPTH_SEEDS = (1,)

# The paper's MRPC schedule (Table 5: T_s = 320, m = 240 steps of a 30-epoch run of 3,668 examples at
# batch 16 = 6,900 steps) as fractions of the run: 320 / 6,900 = 0.0464, 240 / 6,900 = 0.0348. On
# 1,890 steps that is T_s = 87, m = 65: ties at steps 152, 217, 282, 347 — all done by 18 % of the
# run (MiniLM-L6 ties 4 times per type; RoBERTa-base's 7 would end at 29 %, as the paper's do).
PAPER_SCHEDULE = ("adapter.params.merge_start_fraction=0.0464", "adapter.params.merge_interval_fraction=0.0348")


@dataclass(frozen=True)
class Arm:
    label: str
    adapter: str
    overrides: tuple[str, ...]
    lr_from: tuple[str, str]
    """The (adapter, variant) of the lr grid whose chosen lr this arm trains at."""
    shared_a_lr_factor: float | None = None
    """``train.shared_a_lr`` as a fraction of the arm's lr (the spread question), or ``None``."""

    def commands(self, lr: float, seed: int, sweep: str = "") -> list[str]:
        extra = [f"train.shared_a_lr={lr * self.shared_a_lr_factor:.3g}"] if self.shared_a_lr_factor else []
        return [
            f"sweep={sweep or FINAL_SWEEP}",
            f"task={TASK}",
            f"adapter={self.adapter}",
            *self.overrides,
            f"train.lr={lr:g}",
            *extra,
            f"seed={seed}",
        ]


ASLORA_LR = ("aslora", "merge_interval_fraction=0.0348,merge_start_fraction=0.0464")
ARMS = (
    Arm("LoRA r=8", "lora", (), ("lora", "")),
    Arm("LoRA r=2 (ASLoRA's size)", "lora", ("adapter.params.r=2",), ("lora", "r=2")),
    Arm("ASLoRA, paper schedule", "aslora", PAPER_SCHEDULE, ASLORA_LR),
    Arm("ASLoRA, shipped schedule", "aslora", (), ASLORA_LR),
    Arm("ASLoRA, random ties", "aslora", (*PAPER_SCHEDULE, "adapter.params.merge_selection=random"), ASLORA_LR),
    Arm("ASLoRA, fixed ties", "aslora", (*PAPER_SCHEDULE, "adapter.params.merge_selection=fixed"), ASLORA_LR),
    Arm("ASLoRA, no ties (shared A only)", "aslora", ("adapter.params.max_merges=0",), ASLORA_LR),
    Arm("ASLoRA, paper schedule, A at lr/10", "aslora", PAPER_SCHEDULE, ASLORA_LR, shared_a_lr_factor=0.1),
)


# --- the preregistered confirmatory study (results/smalldata/PREREGISTRATION.md) ----------------------
# Fresh seeds: seeds 1–5 (the exploratory suite above) suggested the hypotheses, so they do not test them.
CONFIRM_SWEEP, CONFIRM_GRID = "smalldata_confirm", "smalldata-confirm"
PRIMARY_ARMS, SECONDARY_ARMS = ARMS[:3], ARMS[3:]
PRIMARY_SEEDS = tuple(range(6, 26))  # 20 seeds: LoRA r=8, LoRA r=2, ASLoRA paper schedule
SECONDARY_SEEDS = tuple(range(6, 16))  # 10 seeds: every other ASLoRA arm
ARM_LR_GRID = (3e-4, 1e-3, 3e-3, 1e-2)
"""Each secondary arm's own lr stage (one seed, validation), on the grid the primary arms' covered."""
CONFIRM_DEPTH_SEEDS = (3, 4, 5)
ARM_LR_FILE = "arm_lr.csv"  # results/smalldata/arm_lr.csv: the lr each arm trains at, chosen per arm


def arm_lr_commands(arms: tuple[Arm, ...] = SECONDARY_ARMS, lrs: tuple[float, ...] = ARM_LR_GRID) -> list[list[str]]:
    """The lr stage of each arm that had none (it reused ASLoRA's): every lr of ``lrs``, seed 1."""
    return [arm.commands(lr, 1, sweep=LR_SWEEP) for arm in arms for lr in lrs]


def confirm_commands(arm_lr: dict[str, float]) -> list[list[str]]:
    """The confirmatory runs in the plan's order: the primary arms seed by seed to 20 seeds, then the
    secondary arms seed by seed to 10; an arm without a chosen lr yet is left out."""
    commands = []
    for arms, seeds in ((PRIMARY_ARMS, PRIMARY_SEEDS), (SECONDARY_ARMS, SECONDARY_SEEDS)):
        for seed in seeds:
            commands += [arm.commands(arm_lr[arm.label], seed, CONFIRM_SWEEP) for arm in arms if arm.label in arm_lr]
    return commands


def lr_commands() -> list[list[str]]:
    """Stage 1: LoRA r=8 and ASLoRA (the paper-proportioned schedule) first, then LoRA r=2."""
    return [
        [f"sweep={LR_SWEEP}", "adapter=lora"],
        [f"sweep={LR_SWEEP}", "adapter=aslora", *PAPER_SCHEDULE],
        [f"sweep={LR_SWEEP}", "adapter=lora", "adapter.params.r=2"],
    ]


def final_commands(chosen: list[dict], seeds: tuple[int, ...] = SEEDS, arms: tuple[Arm, ...] = ARMS) -> list[list[str]]:
    """Stage 2, seed by seed and arm by arm within a seed, so a grid stopped part-way has every arm
    at the same seeds. An arm whose lr has not been chosen yet is left out."""
    lr = {(r["adapter"], r["variant"]): float(r["lr"]) for r in chosen if r["task"] == TASK}
    return [arm.commands(lr[arm.lr_from], seed) for seed in seeds for arm in arms if arm.lr_from in lr]


def depth_commands(chosen: list[dict], seeds: tuple[int, ...] = DEPTH_SEEDS) -> list[list[str]]:
    """Stage 3: the first three arms (LoRA r=8, LoRA r=2, ASLoRA with the paper-proportioned ties) on
    :data:`DEPTH_MODEL`, seed by seed, under the grid name :data:`DEPTH_GRID`."""
    depth = [f"model={DEPTH_MODEL}", f"run_prefix={DEPTH_GRID}_"]
    return [[*command, *depth] for command in final_commands(chosen, seeds, ARMS[:3])]


def choose_arm_lrs(run: StageRun, rounds: int = 3) -> dict[str, float]:
    """Every arm's lr, chosen on validation among its own lr-stage runs (seed 1): run the secondary
    arms' lr grids, then while a choice sits at a grid's edge, one more lr beyond it (``next_lr``,
    within ``LR_LIMITS``); write ``results/smalldata/arm_lr.csv``. The primary arms' grids are the
    exploratory suite's lr stage (their choice is recomputed here from the same runs)."""
    from scripts.reports.smalldata_report import arm_identities, by_arm, read_reports

    space = run.space
    run.train(arm_lr_commands())
    if run.dry_run:
        return {}
    identities = arm_identities()
    chosen: dict[str, dict] = {}
    for _ in range(rounds + 1):
        runs = by_arm(read_reports(space.experiments, LR_GRID, from_runs=True), identities)
        chosen = {arm.label: choose_lr(runs.get(arm.label, [])) for arm in ARMS if runs.get(arm.label)}
        extra = []
        for arm in ARMS:
            row = chosen.get(arm.label)
            if row and row["edge"] in ("top", "bottom"):
                lr = next_lr(row["lr"], row["edge"])
                if LR_LIMITS[0] <= lr <= LR_LIMITS[1]:
                    extra.append(arm.commands(lr, 1, sweep=LR_SWEEP))
        if not extra:
            break
        for overrides in extra:
            space.train(overrides, dry_run=False)
    write_arm_lr(chosen, space.results / SUITE / ARM_LR_FILE)
    return {label: row["lr"] for label, row in chosen.items()}


def choose_lr(reports: list[dict]) -> dict:
    """The lr with the best validation score (ties: the smaller lr) among one arm's lr-stage runs,
    and ``edge``: ``top``/``bottom`` when it is the grid's largest/smallest lr."""
    grid = sorted({r["config"]["train"]["lr"] for r in reports})
    best = min(reports, key=lambda r: (-r["best"]["metric"], r["config"]["train"]["lr"]))
    lr = best["config"]["train"]["lr"]
    edge = "" if len(grid) < 2 else {grid[-1]: "top", grid[0]: "bottom"}.get(lr, "")
    return {
        "lr": lr,
        "validation": best["best"]["metric"],
        "grid": ",".join(f"{x:g}" for x in grid),
        "edge": edge,
        "runs": ";".join(r["run_name"] for r in sorted(reports, key=lambda r: r["config"]["train"]["lr"])),
    }


def write_arm_lr(chosen: dict[str, dict], path: Path) -> None:

    if not chosen:
        raise SystemExit("no lr-stage runs of any arm: run `python -m scripts.grids.staged smalldata arm-lr`")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["arm", "lr", "validation", "grid", "edge", "runs"])
        writer.writeheader()
        for arm in ARMS:
            if arm.label in chosen:
                writer.writerow({"arm": arm.label, **chosen[arm.label]})
                row = chosen[arm.label]
                edge = f" (at the {row['edge']} edge)" if row["edge"] else ""
                print(f"{arm.label:<40} lr {row['lr']:g}{edge}  validation {row['validation']:.3f}  grid {row['grid']}")
    print(f"wrote {path}")


def read_arm_lr(path: Path) -> dict[str, float]:

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    labels = {arm.label for arm in ARMS}
    unknown = [r["arm"] for r in rows if r["arm"] not in labels]
    if unknown:
        raise SystemExit(f"{path}: unknown arm(s) {unknown}; known: {sorted(labels)}")
    return {r["arm"]: float(r["lr"]) for r in rows}


def _confirm(run: StageRun) -> list[list[str]]:
    path = run.space.results / SUITE / ARM_LR_FILE
    if not path.is_file():
        raise NotYet("arm-lr", run.space.show(path))
    return confirm_commands(read_arm_lr(path))


SMALLDATA = StagedSuite(
    "smalldata",
    "MiniLM-L6 on 1,000 rt_polarity examples, 30 epochs: the paper's regime (make protocol-smalldata, protocol-confirm)",
    SUITE,
    (LR_GRID,),
    {TASK: f"sweep={LR_SWEEP}"},
    (
        train_stage("lr", lambda run: lr_commands(), "LoRA r=8, LoRA r=2, ASLoRA over the lr grid, one seed"),
        SELECT,
        EXTEND,
        train_stage(
            "final",
            lambda run: final_commands(run.chosen(), run.seeds or SEEDS),
            "every arm, seed by seed",
            seeded=True,
        ),
        train_stage(
            "depth",
            lambda run: depth_commands(run.chosen(), run.seeds or DEPTH_SEEDS),
            f"the three main arms on {DEPTH_MODEL} at MiniLM-L6's lrs",
            seeded=True,
        ),
        Stage("arm-lr", choose_arm_lrs, "each secondary arm's own lr stage → results/smalldata/arm_lr.csv"),
        train_stage("confirm", _confirm, "the preregistered confirmatory runs (fresh seeds)"),
        train_stage(
            "confirm-depth",
            lambda run: depth_commands(run.chosen(), run.seeds or CONFIRM_DEPTH_SEEDS),
            "the confirmatory depth seeds",
            seeded=True,
        ),
    ),
)
