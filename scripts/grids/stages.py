"""What a staged suite is, as data: its stages in order, and the stages every suite shares.

A staged suite (the comparison protocol, its instruction suite, the small-data suite) trains in
stages whose jobs depend on the scores of earlier ones: an ``lr`` stage (each adapter over an lr grid,
one seed), ``select`` (the best lr on validation → ``results/<suite>/chosen_lr.csv``), ``extend``
(lrs beyond a grid's edge until every choice lies inside it; :mod:`scripts.grids.lr_search`), a
``final`` stage at the chosen lrs, and each suite's own stages (the protocol's size curves, the
small-data suite's depth and confirmatory stages). A suite is a :class:`StagedSuite` — its name,
where its choice lives, the lr grids ``select`` reads, and its :class:`Stage` s — built in
:mod:`scripts.grids.protocol` and :mod:`scripts.grids.smalldata`; :mod:`scripts.grids.staged` is the
one driver that runs a stage of any of them, and ``plan`` prints every stage's commands in order.

Stages talk through files (:mod:`scripts.grids.workspace`): a stage whose input does not exist yet
raises :class:`NotYet`, which ``plan`` prints as where it stops and a real run turns into an error
naming the stage to run first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from scripts.grids.lr_search import extend_until_inside, extension_commands, select, write_chosen
from scripts.grids.workspace import Workspace, read_runs


class NotYet(Exception):
    """A stage's input (``path``) is written by an earlier stage (``after``) that has not run."""

    def __init__(self, after: str, path: str):
        super().__init__(f"after `{after}` (it needs {path})")
        self.after, self.path = after, path


@dataclass(frozen=True)
class StageRun:
    """One stage being run: the suite, where it reads and writes, and how."""

    suite: StagedSuite
    space: Workspace
    dry_run: bool
    """Print the ``train.py`` commands, train nothing (``plan`` and ``--dry-run``)."""
    runs: Path
    """The ``runs.csv`` that ``select`` reads."""
    seeds: tuple[int, ...] | None = None
    """``--seeds``: the seeds a seeded stage runs instead of its default."""

    @property
    def chosen_path(self) -> Path:
        return self.space.chosen(self.suite.results)

    def chosen(self) -> list[dict]:
        """``chosen_lr.csv``'s rows (:class:`NotYet` before ``select`` wrote it)."""
        if not self.chosen_path.is_file():
            raise NotYet("select", self.space.show(self.chosen_path))
        return read_runs(self.chosen_path)

    def train(self, commands: Sequence[Sequence[str]]) -> None:
        for overrides in commands:
            self.space.train(overrides, self.dry_run)


@dataclass(frozen=True)
class Stage:
    name: str
    run: Callable[[StageRun], None]
    help: str
    trains: bool = True
    """Trains runs: the runs committed under ``results/reports/`` are restored first, so finished
    runs are skipped (a fresh clone continues the suite instead of repeating it)."""
    planned: bool = True
    """``plan`` prints its commands (``select`` and ``extend`` depend on scores, so they have none)."""
    seeded: bool = False
    """Takes ``--seeds``."""


@dataclass(frozen=True)
class StagedSuite:
    name: str
    description: str
    results: str
    """``results/<results>/chosen_lr.csv`` holds its lr choice (suites may share one)."""
    lr_grids: tuple[str, ...]
    """The ``runs.csv`` grids ``select`` and ``extend`` read."""
    lr_sweep: dict[str, str]
    """Task → the ``sweep=…`` override of its lr grid (``extend``'s extra runs)."""
    stages: tuple[Stage, ...]

    def stage(self, name: str) -> Stage:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise SystemExit(f"suite {self.name!r} has no stage {name!r}; its stages: {', '.join(self.stage_names)}, plan")

    @property
    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]


def train_stage(name: str, commands: Callable[[StageRun], list[list[str]]], help: str, seeded: bool = False) -> Stage:
    """A stage that trains the multiruns ``commands`` gives (from the files earlier stages wrote)."""
    return Stage(name, lambda run: run.train(commands(run)), help, seeded=seeded)


def _select(run: StageRun) -> None:
    grids = run.suite.lr_grids
    if not run.runs.is_file():
        raise SystemExit(f"{run.space.show(run.runs)} not found: run the lr stage, then `make collect`")
    write_chosen(select(read_runs(run.runs), grids), run.runs, run.chosen_path, grids)


def _extend(run: StageRun) -> None:
    suite = run.suite
    if run.dry_run:  # one round: later rounds depend on the scores of this one
        run.train(extension_commands(run.chosen(), suite.lr_sweep))
        return
    chosen = extend_until_inside(
        run.space.collect, lambda o: run.space.train(o, dry_run=False), suite.lr_grids, suite.lr_sweep
    )
    write_chosen(chosen, run.runs, run.chosen_path, suite.lr_grids)


SELECT = Stage(
    "select", _select, "results/runs.csv → results/<suite>/chosen_lr.csv (best validation)", trains=False, planned=False
)
EXTEND = Stage(
    "extend", _extend, "lrs beyond a grid's edge where the choice sits on it, until it lies inside", planned=False
)


def run_stage(
    suite: StagedSuite,
    name: str,
    space: Workspace,
    dry_run: bool = False,
    runs: Path | None = None,
    seeds: tuple[int, ...] | None = None,
) -> int:
    """Stage ``name`` of ``suite`` in ``space``; ``plan``: print every planned stage's commands in
    order, stopping where a stage's input does not exist yet."""
    plan = name == "plan"
    stages = [s for s in suite.stages if s.planned] if plan else [suite.stage(name)]
    if seeds and not plan and not stages[0].seeded:
        raise SystemExit(f"stage {name!r} of suite {suite.name!r} takes no --seeds")
    run = StageRun(suite, space, dry_run or plan, runs or space.runs, seeds)
    if stages[0].trains and not run.dry_run:
        space.restore_committed_runs()
    for stage in stages:
        try:
            stage.run(run)
        except NotYet as missing:
            if plan:
                print(f"# {stage.name}: {missing}")
                return 0
            raise SystemExit(
                f"{missing.path} not found: stage {stage.name!r} comes after {missing.after!r} "
                f"(python -m scripts.grids.staged {suite.name} {missing.after})"
            ) from None
    return 0
