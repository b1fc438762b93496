"""The grid preflight: every job of a grid checked, and the grid's plan printed, before job 1 starts.

    python -m scripts.grids.preflight sweep=glue hub=true            # check and print the plan; run nothing
    python -m scripts.grids.preflight --processes 8 sweep=glue ...   # as if each job ran on 8 processes (DDP)
    python -m scripts.grids.preflight --jobs sweep=smalldata_lr      # also every job's run and whether it is done

``configs/train.yaml`` registers :class:`GridPreflight` as a Hydra callback, so every
``python train.py -m …`` (every ``make`` grid) runs the same checks before its launcher starts job 1.
A problem in job 97 — a missing local split, MNLI's adapter not yet trained for the MNLI-initialised
runs, a schedule that does not fit one task's length, two jobs that would write one run directory —
is reported at once, every failing job listed, instead of after 96 jobs of GPU time.

For every job, exactly as the job itself would (``aslora.harness.runs.run.check_before_loading``), with
nothing loaded and nothing written: the config composes and is valid; the task's data and the model's
weights can be had here (checked once per source: local GLUE files with every split read, a package,
or the Hub under ``hub=true``); the merge schedule fits the run under the grid's process count; an
``init_adapter_from`` adapter exists. Then that no two jobs share a run directory.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
Compose = Callable[[list[str]], tuple[dict[str, Any], dict[str, str]]]


class GridProblem(ValueError):
    """Jobs of a grid that would fail, each problem with the jobs it affects."""


@dataclass(frozen=True)
class Job:
    number: int
    overrides: tuple[str, ...]
    run_name: str
    run_dir: Path
    done: bool
    model: str
    task: str
    adapter: str
    plan: Any  # aslora.harness.runs.plan.RunPlan


def grid_jobs(overrides: Sequence[str], sweeper_params: dict[str, Any] | None) -> list[list[str]]:
    """The jobs Hydra's basic sweeper makes of ``train.py -m <overrides>``: the sweep config's
    ``hydra.sweeper.params`` then the command line's overrides (which win), expanded to their product,
    in Hydra's order — by Hydra's own code, so the list is the one the launcher will run."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    arguments = [f"{key}={value}" for key, value in (sweeper_params or {}).items()] + list(overrides)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def check_grid(jobs: list[list[str]], compose: Compose, num_processes: int | None = None) -> list[Job]:
    """Check every job (see the module docstring); raise :class:`GridProblem` listing every problem
    and the jobs it affects, or return the checked jobs."""
    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # local files are read once per source: no bar per split
    try:
        return _check_grid(jobs, compose, num_processes)
    finally:
        if bars:
            datasets.enable_progress_bars()


def _check_grid(jobs: list[list[str]], compose: Compose, num_processes: int | None) -> list[Job]:
    from aslora.harness.runs.report import is_done
    from aslora.harness.runs.run import check_run_inputs, check_sources
    from aslora.harness.runs.settings import RunSettings

    problems: dict[str, list[int]] = defaultdict(list)
    sources: dict[tuple, tuple[str | None, int | None]] = {}  # one check per data/weights source, not per job
    checked: list[Job] = []
    for number, overrides in enumerate(jobs):
        try:
            container, choices = compose(overrides)
            settings = RunSettings.from_dict(container, choices)
            source = (settings.task.name, settings.task.local_dir, settings.hub, settings.model.name)
            if source not in sources:
                try:
                    sources[source] = (None, check_sources(settings))
                except ValueError as error:
                    sources[source] = (str(error), None)
            problem, train_rows = sources[source]
            if problem is not None:
                raise ValueError(problem)
            plan = check_run_inputs(settings, num_processes, train_rows)
        except Exception as error:  # every job's problem, not only the first job's
            problems[f"{type(error).__name__}: {error}"].append(number)
            continue
        checked.append(
            Job(number, tuple(overrides), settings.run_name, settings.run_dir, is_done(settings.report_path),
                settings.model.name, settings.task.name, settings.adapter.name, plan)
        )  # fmt: skip
    by_dir = defaultdict(list)
    for job in checked:
        by_dir[job.run_dir].append(job)
    for run_dir, same in by_dir.items():
        if len(same) > 1:
            overrides = "; ".join(" ".join(job.overrides) for job in same)
            problems[
                f"{len(same)} jobs would write one run directory, {run_dir} ({overrides}): add the key that "
                f"tells them apart to the run name (it joins every swept key not in "
                f"hydra.job.config.override_dirname.exclude_keys), or give them a run_prefix"
            ].extend(job.number for job in same)
    if problems:
        lines = [f"{len(jobs)} jobs checked; {sum(map(len, problems.values()))} would fail:"]
        for message, numbers in problems.items():
            lines.append(f"  job(s) {_ranges(numbers)}: {message}")
        raise GridProblem("\n".join(lines))
    return checked


def describe(jobs: list[Job], every_job: bool = False) -> str:
    """The grid's plan: jobs, what is done, steps per job (per process), ties, where results go."""
    done = sum(job.done for job in jobs)
    processes = {job.plan.num_processes for job in jobs}
    homes = sorted({str(job.run_dir.parent) for job in jobs})
    lines = [
        f"grid: {len(jobs)} jobs ({done} done, skipped; {len(jobs) - done} to run), "
        f"{'/'.join(map(str, sorted(processes)))} process(es) each, results in {', '.join(homes)}/<run>/"
    ]
    groups = Counter(
        (job.model, job.task, job.adapter, job.plan.total_steps, job.plan.steps_per_epoch, job.plan.merge_steps)
        for job in jobs
    )
    for (model, task, adapter, steps, per_epoch, merges), count in groups.items():
        ties = f"; ties at steps {', '.join(map(str, merges))}" if merges else ""
        lines.append(f"  {count} × {model} · {task} · {adapter}: {steps} steps ({per_epoch} an epoch){ties}")
    if every_job:
        lines += [f"  {'done' if job.done else 'todo'}  {job.run_name}" for job in jobs]
    return "\n".join(lines)


def _params(params: DictConfig | None) -> dict[str, Any]:
    """A sweep config's ``hydra.sweeper.params`` as written (``{"train.lr": "1e-3,3e-3"}``), or none."""
    return {} if params is None else OmegaConf.to_container(params, resolve=False)


def _ranges(numbers: list[int]) -> str:
    """``0-3, 7`` for [0, 1, 2, 3, 7]."""
    numbers, spans = sorted(set(numbers)), []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in spans)


class GridPreflight(Callback):
    """Before a multirun's first job: check every job (:func:`check_grid`), print the plan, or stop."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from hydra_glue import resolve_run
        from scripts.grids.launch import check_launcher

        launcher = check_launcher(config.hydra.launcher, config.hydra.runtime.choices.get("hydra/launcher"))
        if launcher:
            raise SystemExit("stopped before the first job: " + "; ".join(launcher))
        if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
            print(f"grid preflight: skipped (it knows the job list of {BASIC_SWEEPER} only)", flush=True)
            return
        if config.get("hub", False):  # one request, before composing a single job
            from aslora.harness.inputs.hub import check_hub_reachable

            try:
                check_hub_reachable("the grid runs with hub=true and")
            except ValueError as error:
                raise SystemExit(f"stopped before the first job: {error}") from None
        try:
            # unresolved: iterating the ListConfig would resolve an override's ${...} against the primary config
            overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
            jobs = grid_jobs(overrides, _params(config.hydra.sweeper.get("params")))
            checked = check_grid(jobs, resolve_run)
        except GridProblem as problem:
            raise SystemExit(f"stopped before the first job: {problem}") from None
        except Exception as error:  # Hydra turns a callback's exception into a warning and runs the grid
            raise SystemExit(f"stopped before the first job: the grid preflight failed: {error!r}") from error
        print(describe(checked), flush=True)


def jobs_of(overrides: Sequence[str]) -> list[list[str]]:
    """The job list of ``python train.py -m <overrides>`` (the sweep config's ``hydra.sweeper.params``
    read by composing the overrides that sweep nothing). Needs Hydra initialised (``composer()``)."""
    from hydra import compose
    from hydra.core.override_parser.overrides_parser import OverridesParser

    fixed = [
        o.input_line for o in OverridesParser.create().parse_overrides(list(overrides)) if not o.is_sweep_override()
    ]
    hydra_config = compose(config_name="train", overrides=fixed, return_hydra_config=True).hydra
    return grid_jobs(overrides, _params(hydra_config.sweeper.get("params")))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=None, help="processes per job (default: 1, or WORLD_SIZE)")
    parser.add_argument("--jobs", action="store_true", help="also list every job's run and whether it is done")
    parser.add_argument("overrides", nargs="*", help="the overrides train.py -m would get")
    args = parser.parse_args(argv)
    from hydra_glue import composer

    with composer() as compose_one:
        jobs = jobs_of(args.overrides)
        try:
            checked = check_grid(jobs, compose_one, args.processes)
        except GridProblem as problem:
            print(problem, file=sys.stderr)
            return 1
    print(describe(checked, every_job=args.jobs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
