"""Where a staged grid (the comparison protocol, the small-data suite) reads and writes, in one place.

A staged grid's stages talk to each other through files: a stage trains runs into ``experiments/``,
``collect`` turns them into ``results/runs.csv``, ``select`` writes ``results/<suite>/chosen_lr.csv``,
and the next stage reads it. By default those are the repository's own folders, and every stage first
restores the runs committed under ``results/reports/`` (a fresh clone continues the grid instead of
repeating it). The rehearsal (``scripts/grids/rehearsal.py``) runs the same stages in a scratch folder —
``Workspace.scratch(root, overrides)`` — where nothing is restored, every ``train.py`` call gets the
rehearsal's scale overrides on top of its own, and nothing mixes with committed results.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from hydra_glue import ROOT


@dataclass(frozen=True)
class Workspace:
    root: Path = ROOT
    """``experiments/`` and ``results/`` live under it."""
    overrides: tuple[str, ...] = ()
    """Given to every ``train.py`` call after the stage's own (the rehearsal's scale)."""
    restore: bool = True
    """Restore the runs committed under ``results/reports/`` before a stage trains."""
    allow_dirty: bool = False
    """Train from a tree with uncommitted changes to tracked files (each report then carries the
    diff). Off: a grid's results must come from committed code, so a dirty tree is refused."""

    @classmethod
    def scratch(cls, root: Path, overrides: Sequence[str] = ()) -> Workspace:
        """A folder of its own: runs go to ``root/experiments``, nothing committed is restored."""
        return cls(Path(root), (f"experiments_dir={Path(root) / 'experiments'}", *overrides), restore=False)

    @property
    def experiments(self) -> Path:
        return self.root / "experiments"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def runs(self) -> Path:
        return self.results / "runs.csv"

    def chosen(self, suite: str) -> Path:
        """``results/<suite>/chosen_lr.csv``: the lr ``select`` chose per adapter."""
        return self.results / suite / "chosen_lr.csv"

    def show(self, path: Path) -> str:
        return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)

    def train(self, overrides: Sequence[str], dry_run: bool) -> None:
        """One ``train.py -m`` multirun (print it; run it unless ``dry_run``, or unless every job of it
        has finished); stop the stage if it fails."""
        command = [*overrides, *self.overrides]
        if not dry_run:
            self.require_committed_code()
        if not dry_run and every_job_done(command):
            print("done, skipped: python train.py -m " + " ".join(command), flush=True)
            return
        print("$ python train.py -m " + " ".join(command), flush=True)
        if not dry_run:
            subprocess.run([sys.executable, str(ROOT / "train.py"), "-m", *command], cwd=ROOT, check=True)

    def require_committed_code(self) -> None:
        """Refuse (before anything is written) to train a grid of committed results from a tree whose
        tracked files differ from its commit, naming them; a scratch workspace (the rehearsal) and
        ``allow_dirty`` pass."""
        if not self.restore or self.allow_dirty:
            return
        changed = modified_files(ROOT)
        if changed:
            shown = ", ".join(changed[:10]) + (f" and {len(changed) - 10} more" if len(changed) > 10 else "")
            raise SystemExit(
                f"refusing to run a grid from a tree with uncommitted changes ({shown}): its reports would "
                f"not match any commit. Commit them (or run from a clean `git worktree`), or pass "
                f"allow_dirty=true (--allow-dirty) to run anyway, each report carrying the diff"
            )

    def restore_committed_runs(self) -> None:
        if not self.restore:
            return
        self.require_committed_code()
        from scripts.reports.collect_results import restore_reports

        try:
            restored = restore_reports(self.results / "reports", self.experiments)
        except ValueError as error:
            raise SystemExit(f"restoring the committed runs: {error}; nothing written") from None
        if restored:
            print(f"{len(restored)} finished runs restored from results/reports (they will be skipped)", flush=True)

    def collect(self) -> list[dict]:
        """``make collect`` for this workspace, then its ``runs.csv``'s rows."""
        from scripts.reports.collect_results import main as collect

        if collect(["--experiments", str(self.experiments), "--out", str(self.runs)]) != 0:
            raise SystemExit(f"collecting {self.experiments} failed")
        return read_runs(self.runs)

    def sharing_reports(self, pattern: str) -> list[dict]:
        """The reports ``collect`` kept beside the sharing inputs, ``results/sharing/<pattern>/report.json``."""
        return [json.loads(p.read_text()) for p in sorted((self.results / "sharing").glob(f"{pattern}/report.json"))]


def every_job_done(command: Sequence[str]) -> bool:
    """Whether every job of ``train.py -m <command>`` already has a finished report (and none asks for
    ``overwrite``): composed here, as the job would compose it, so a restarted grid passes its finished
    runs in a fraction of a second each instead of starting a ``train.py`` (and, under SLURM, queueing a
    job) for each one only to have it skip. A job that does not compose is left to ``train.py``, whose
    preflight names the problem."""
    from aslora.harness.runs.report import is_done
    from aslora.harness.runs.settings import RunSettings
    from hydra_glue import composer
    from scripts.grids.preflight import jobs_of

    try:
        with composer() as compose:
            for job in jobs_of(command):
                settings = RunSettings.from_dict(*compose(job))  # where the job itself looks (run.py's skip)
                # train.py runs in ROOT: a relative experiments_dir is ROOT's
                if settings.overwrite or not is_done(ROOT / settings.report_path):
                    return False
    except Exception:  # a problem of the command: train.py's preflight reports it, with its context
        return False
    return True


def read_runs(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def modified_files(root: Path) -> list[str]:
    """Tracked files whose content differs from HEAD (``git status --porcelain``, untracked ignored,
    as the reports' ``git_dirty`` counts them); ``[]`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    return [line[3:] for line in out.stdout.splitlines() if line.strip()]
