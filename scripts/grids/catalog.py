"""The grids the ``make`` targets run, in one place: the Makefile runs them through this module, and
the rehearsal (``scripts/grids/rehearsal.py``) runs the same lists at tiny scale.

Two kinds. A plain grid (:data:`GRIDS`) is a list of ``train.py`` multiruns, run in order. A staged
grid (:data:`STAGED`: the comparison protocol, its instruction suite, the small-data suite) is a list
of a suite's stages (:mod:`scripts.grids.staged`) with ``collect`` between them, because a later
stage's jobs depend on the earlier stages' scores (the lr ``select`` chose, the tie distances the
size curves' thresholds come from).

    python -m scripts.grids glue                                   # make reproduce-glue's three grids
    python -m scripts.grids glue hydra/launcher=parallel hydra.launcher.n_jobs=8   # extra overrides: every grid
    python -m scripts.grids smalldata                              # make protocol-smalldata's stages
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

from hydra_glue import ROOT

GRIDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "offline": (("sweep=offline",),),
    "instruct": (("sweep=offline_instruct",),),
    # LoRA's MNLI-initialised MRPC/RTE/STS-B start from the MNLI LoRA runs: those first, then them
    "glue": (("sweep=glue",), ("sweep=glue", "task=mnli", "adapter=lora"), ("sweep=glue_mnli_init",)),
    "alpaca": (("sweep=alpaca",),),
    "merge": tuple(
        (f"sweep={sweep}",)
        for sweep in ("merge_max_merges", "merge_threshold", "merge_candidates", "merge_start", "merge_interval")
    ),
    "ablation": (("sweep=ablation",),),
}


COLLECT = "collect"
STAGED: dict[str, tuple[str, tuple[str, ...]]] = {
    "protocol": ("protocol", ("lr", COLLECT, "select", "extend", "final", COLLECT, "curves")),
    "protocol-instruct": ("protocol-instruct", ("lr", COLLECT, "select", "extend", "final")),
    "smalldata": ("smalldata", ("lr", COLLECT, "select", "extend", "final")),
    # the preregistered confirmatory study (results/smalldata/PREREGISTRATION.md)
    "smalldata-confirm": ("smalldata", ("arm-lr", "confirm", "confirm-depth")),
}
"""Staged grid → (suite, its stages in order): each stage is ``python -m scripts.grids.staged <suite>
<stage>`` (:mod:`scripts.grids.staged`); ``collect`` is ``make collect``."""


def _allow_dirty(extra: Sequence[str]) -> tuple[bool, list[str]]:
    """``allow_dirty=true`` is the grid's switch, not a ``train.py`` override: taken out of ``extra``."""
    return "allow_dirty=true" in extra, [e for e in extra if e != "allow_dirty=true"]


def run_staged(name: str, root: Path | None = None, extra: Sequence[str] = ()) -> None:
    """Run staged grid ``name``'s stages in order — in the repository's folders, or (``root``) in a
    scratch workspace whose every ``train.py`` call also gets ``extra``; stop at the first that fails."""
    from scripts.grids import staged
    from scripts.grids.workspace import Workspace

    allow_dirty, extra = _allow_dirty(extra)
    if extra and not root:
        raise SystemExit(f"extra overrides {list(extra)} for staged grid {name!r} need a scratch root")
    space = Workspace.scratch(root, extra) if root else Workspace(allow_dirty=allow_dirty)
    suite, stages = STAGED[name]
    for stage in stages:
        if stage == COLLECT:
            print("$ make collect", flush=True)
            space.collect()
            continue
        print(f"$ python -m scripts.grids.staged {suite} {stage}", flush=True)
        flags = [
            suite,
            stage,
            *(["--root", str(root), *extra] if root else []),
            *(["--allow-dirty"] if allow_dirty else []),
        ]
        if staged.main(flags) != 0:
            raise SystemExit(f"scripts.grids.staged {suite} {stage} failed")


def run(name: str, extra: Sequence[str] = (), cwd=ROOT) -> None:
    """Run grid ``name``'s multiruns in order, each with ``extra`` overrides; stop at the first that fails."""
    if name in STAGED:
        return run_staged(name, extra=extra)
    if name not in GRIDS:
        raise SystemExit(f"unknown grid {name!r}; known: {', '.join([*GRIDS, *STAGED])}")
    from scripts.grids.workspace import Workspace

    allow_dirty, extra = _allow_dirty(extra)
    Workspace(allow_dirty=allow_dirty).require_committed_code()  # before any job writes anything
    for overrides in GRIDS[name]:
        command = [*overrides, *extra]
        print("$ python train.py " + " ".join(command), flush=True)
        subprocess.run([sys.executable, str(ROOT / "train.py"), *command], cwd=cwd, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit(f"usage: python -m scripts.grids <{'|'.join([*GRIDS, *STAGED])}> [overrides...]")
    try:
        run(args[0], args[1:])
    except subprocess.CalledProcessError as error:
        return error.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
