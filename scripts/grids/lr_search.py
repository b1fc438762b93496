"""How a staged suite chooses each adapter's learning rate: on validation, over a grid, extended past
an edge until the choice lies inside it (the ``select`` and ``extend`` stages of every suite).

A choice at a grid's edge says only "at least this far", so ``extend`` runs one more lr beyond that
edge on the 1–3 half-decade ladder the grids use, selects again, and repeats until every choice lies
inside its grid, the next lr would leave :data:`LR_LIMITS`, or :data:`MAX_EXTENSION_ROUNDS` are spent.
The choice is written to ``results/<suite>/chosen_lr.csv`` with the grid it came from, the score that
chose it and the runs behind it, so every final run's lr can be traced to its evidence.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Callable

from aslora.harness.measuring.metrics import LOWER_IS_BETTER
from scripts.grids.workspace import Workspace

LR_LIMITS = (1e-5, 0.1)  # an edge beyond these is reported, not extended
MAX_EXTENSION_ROUNDS = 3  # 1e-2 → 3e-2 → 0.1 is as far as a top edge can go within LR_LIMITS


def select(rows: list[dict], grids: tuple[str, ...]) -> list[dict]:
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


def variant_overrides(row: dict) -> list[str]:
    """A row's size variant (``"r=2"``) as the overrides that make it (``adapter.params.r=2``)."""
    return [f"adapter.params.{part}" for part in row["variant"].split(",") if part]


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


def extension_commands(chosen: list[dict], lr_sweep: dict[str, str]) -> list[list[str]]:
    """One more run beyond the edge of each grid whose choice sits at it (then ``collect`` and
    ``select`` again). ``lr_sweep``: task → the ``sweep=…`` override of its lr grid; a task without
    one is not this suite's and is left alone."""
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
                *variant_overrides(row),
                f"train.lr={lr:g}",
            ]
        )
    return commands


def extend_until_inside(
    current_rows: Callable[[], list[dict]],
    train: Callable[[list[str]], None],
    grids: tuple[str, ...],
    lr_sweep: dict[str, str],
    rounds: int = MAX_EXTENSION_ROUNDS,
) -> list[dict]:
    """Extend every grid whose choice sits at an edge, re-select, and repeat until every choice lies
    inside its grid (or ``rounds`` are spent, or the next lr is beyond ``LR_LIMITS``): one extra lr
    can move the best to the new edge. ``current_rows`` returns the runs after training (in a
    stage: ``collect``, then ``runs.csv``)."""
    chosen = select(current_rows(), grids)
    for _ in range(rounds):
        commands = extension_commands(chosen, lr_sweep)
        if not commands:
            break
        for overrides in commands:
            train(overrides)
        chosen = select(current_rows(), grids)
    return chosen


def write_chosen(chosen: list[dict], source: Path, path: Path, grids: tuple[str, ...]) -> None:
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
