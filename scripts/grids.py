"""The ``train.py`` grids the ``make`` targets run, each a list of multiruns in order, in one place:
the Makefile runs them through this module, and the rehearsal (``scripts/rehearsal.py``) runs the
same lists at tiny scale.

    python -m scripts.grids glue                                   # make reproduce-glue's three grids
    python -m scripts.grids glue hydra/launcher=parallel hydra.launcher.n_jobs=8   # extra overrides: every grid
"""

from __future__ import annotations

import subprocess
import sys
from typing import Sequence

from scripts.compose import ROOT

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


def run(name: str, extra: Sequence[str] = (), cwd=ROOT) -> None:
    """Run grid ``name``'s multiruns in order, each with ``extra`` overrides; stop at the first that fails."""
    if name not in GRIDS:
        raise SystemExit(f"unknown grid {name!r}; known: {', '.join(GRIDS)}")
    for overrides in GRIDS[name]:
        command = [*overrides, *extra]
        print("$ python train.py " + " ".join(command), flush=True)
        subprocess.run([sys.executable, str(ROOT / "train.py"), *command], cwd=cwd, check=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit(f"usage: python -m scripts.grids <{'|'.join(GRIDS)}> [overrides...]")
    try:
        run(args[0], args[1:])
    except subprocess.CalledProcessError as error:
        return error.returncode
    return 0


if __name__ == "__main__":
    sys.exit(main())
