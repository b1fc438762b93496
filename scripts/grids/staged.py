"""The one driver of the staged suites: ``python -m scripts.grids.staged <suite> <stage>``.

    python -m scripts.grids.staged protocol lr                 # the comparison protocol's lr stage
    python -m scripts.grids.staged protocol-instruct final     # its instruction suite's final stage
    python -m scripts.grids.staged smalldata confirm           # the small-data suite's confirmatory runs
    python -m scripts.grids.staged smalldata plan              # every command of every stage, run nothing
    python -m scripts.grids.staged smalldata final --seeds 1,2 --root /tmp/x train.epochs=3   # scratch

The suites are data (:class:`scripts.grids.stages.StagedSuite`, built in :mod:`scripts.grids.protocol`
and :mod:`scripts.grids.smalldata`); ``python -m scripts.grids <grid>`` (:mod:`scripts.grids.catalog`)
runs a suite's stages in order with ``make collect`` between them. Every training stage first
restores the runs committed under ``results/reports/`` (finished runs are skipped) and refuses a
tree with uncommitted changes unless ``--allow-dirty``; ``--root`` runs in a scratch folder instead,
where nothing is restored and every ``train.py`` call gets the extra overrides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scripts.grids.protocol import CLASSIFICATION, INSTRUCT
from scripts.grids.smalldata import SMALLDATA
from scripts.grids.stages import StagedSuite, run_stage
from scripts.grids.workspace import Workspace

SUITES: dict[str, StagedSuite] = {s.name: s for s in (CLASSIFICATION, INSTRUCT, SMALLDATA)}


def _epilog() -> str:
    lines = []
    for suite in SUITES.values():
        lines.append(f"{suite.name}: {suite.description}")
        lines += [f"  {s.name:<14} {s.help}" for s in suite.stages]
        lines.append(f"  {'plan':<14} print every stage's commands, run nothing")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("suite", choices=sorted(SUITES))
    parser.add_argument("stage", help="one of the suite's stages (below), or plan")
    parser.add_argument("--seeds", default=None, help="a seeded stage's seeds, e.g. 1,2,3 (default: the suite's)")
    parser.add_argument(
        "--runs", type=Path, default=None, help="the runs select reads (default: <root>/results/runs.csv)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the train.py commands, run nothing")
    parser.add_argument("--allow-dirty", action="store_true", help="train from a tree with uncommitted changes")
    parser.add_argument(
        "--root", type=Path, default=None, help="a scratch folder for experiments/ and results/ (nothing restored)"
    )
    parser.add_argument("overrides", nargs="*", help="extra overrides for every train.py call (with --root)")
    args = parser.parse_intermixed_args(argv)
    if args.overrides and args.root is None:
        raise SystemExit(f"extra overrides {args.overrides} need --root: they would mix with committed results")
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",")) if args.seeds else None
    except ValueError:
        raise SystemExit(f"--seeds {args.seeds!r}: give integers separated by commas, e.g. 1,2,3") from None
    space = Workspace.scratch(args.root, args.overrides) if args.root else Workspace(allow_dirty=args.allow_dirty)
    return run_stage(SUITES[args.suite], args.stage, space, args.dry_run, args.runs, seeds)


if __name__ == "__main__":
    sys.exit(main())
