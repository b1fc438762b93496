"""Every ``experiments/**/report.json`` → ``results/runs.csv``: one row per finished run.

    python -m scripts.reports.collect_results [--experiments experiments] [--out results/runs.csv] [--replace]

``runs.csv`` accumulates: a run found under ``--experiments`` replaces its row (by run name), rows
of runs not found there are kept — so collecting on a machine that holds only some of the runs
never drops the others. ``--replace`` starts the file afresh.

Nothing is typed by hand: every column comes from a report (see aslora/harness/runs/report.py). For every
finished ASLoRA run it also keeps what the sharing map is drawn from — the report and the saved
adapter's ``aslora_config.json`` (layer→B map, merge history) — under ``results/sharing/<run>/``
(beside ``--out``), so the committed figures regenerate from committed files (``make figures``).

Every finished run's report is also kept as ``results/reports/<run>.json``: the rows can be
re-derived from committed files, and ``--restore`` copies them back to
``experiments/<run>/report.json`` where a run has none, so a grid started on a fresh clone (or a
new worktree) skips the runs already committed instead of running them again.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
from pathlib import Path

from aslora.export import CONFIG_FILE, PEFT_CONFIG_FILE
from aslora.harness.runs.report import adapter_size_at_best, grid_of, is_done, load_report, variant_of
from hydra_glue import ROOT, current_run_name

MERGE_SETTINGS = (
    "a_sharing",
    "max_merges",
    "merge_candidates",
    "merge_distance_threshold",
    "merge_start_fraction",
    "merge_interval_fraction",
    "merge_start_step",
    "merge_interval_steps",
    "merge_update_ratio",
    "merge_scope",
)
"""The adapter settings runs.csv carries as columns, in their column order."""
COLUMNS = [
    "run_name",
    "grid",
    "model",
    "task",
    "task_standin_for",
    "adapter",
    "seed",
    "main_metric",
    "best_metric",
    "best_epoch",
    "test_metric_at_best",
    "adapter_params_before",
    "adapter_params_after",
    "adapter_params_at_best",
    "lora_reference",
    "fraction_of_lora_after",
    "num_distinct_B_after",
    *MERGE_SETTINGS,
    "num_merges",
    "steps",
    "train_seconds",
    "device",
    "num_processes",
    "git_sha",
    "git_dirty",
    "report",
    "variant",
    "lr",
    "shared_a_lr",
]


def variant(report: dict) -> str:
    """``"a_sharing=per_module,merge_selection=random"`` for a run that swept adapter settings, else
    ``""`` (from the report's ``variant``; the lr has its own column); ``"init=mnli"`` for a LoRA run
    initialised from an MNLI run's adapter (read from that run's report)."""
    swept = variant_of(report)
    parts = [
        f"{k.removeprefix('adapter.params.')}={v}" for k, v in sorted(swept.items()) if k.startswith("adapter.params.")
    ]
    init_adapter_from = report.get("init_adapter_from")
    if init_adapter_from:
        source = Path(init_adapter_from).parent / "report.json"
        parts.append(f"init={json.loads(source.read_text())['task'] if source.is_file() else 'other'}")
    return ",".join(parts)


def row(report: dict, path: Path) -> dict:
    params = report["config"]["adapter"]["params"]
    metric = report["main_metric"]
    test = (report["best"].get("test") or {}).get(metric)
    return {
        "run_name": report["run_name"],
        "grid": grid_of(report),
        "model": report["model"],
        "task": report["task"],
        "task_standin_for": report.get("task_standin_for") or "",
        "adapter": report["adapter"],
        "seed": report["seed"],
        "main_metric": metric,
        "best_metric": report["best"]["metric"],
        "best_epoch": report["best"]["epoch"],
        "test_metric_at_best": "" if test is None else test,
        "adapter_params_before": report["params"]["before"]["adapter"],
        "adapter_params_after": report["params"]["after"]["adapter"],
        # the size behind the row's scores: the best epoch can precede ASLoRA's last tie
        "adapter_params_at_best": adapter_size_at_best(report),
        "lora_reference": report["params"]["lora_reference"],
        "fraction_of_lora_after": report["params"]["fraction_of_lora_after"],
        "num_distinct_B_after": report["params"]["after"].get("num_distinct_B") or "",
        **{key: _blank(params.get(key)) for key in MERGE_SETTINGS},
        "num_merges": len(report.get("merge_history", [])),
        "steps": report["steps"],
        "lr": report["config"]["train"]["lr"],
        # its own column, as the lr: a run at another shared-A lr is another arm (the small-data suite's)
        "shared_a_lr": _blank(report["config"]["train"].get("shared_a_lr")),
        "train_seconds": round(report["train_seconds"], 1),
        "device": report["environment"]["device"],
        "num_processes": report.get("num_processes", 1),
        "git_sha": report["environment"]["git_sha"] or "",
        "git_dirty": report["environment"]["git_dirty"],
        "report": str(path),
        "variant": variant(report),
    }


def collect(experiments: Path) -> list[dict]:
    rows = []
    for path in sorted(experiments.glob("**/report.json")):
        if not is_done(path):  # a run still going, failed, or a file that is not a report: not a row
            continue
        report = load_report(path)  # a finished report missing what a row needs: refused, naming the field
        rows.append(row(report, path.relative_to(experiments.parent) if experiments.is_absolute() else path))
    return rows


def keep_sharing_inputs(rows: list[dict], experiments: Path, out_dir: Path) -> int:
    """Copy each ASLoRA run's report and adapter JSON (``aslora_config.json``; version-1 runs:
    ``adapter_config.json``) to ``out_dir/<run_name>/``."""
    kept = 0
    for r in rows:
        run_dir = experiments / r["run_name"]
        # the last epoch's adapter: the sharing map and timeline show the whole run's ties (older
        # runs saved only that one, as adapter/)
        configs = [
            run_dir / folder / name
            for folder in ("adapter_last", "adapter")
            for name in (CONFIG_FILE, PEFT_CONFIG_FILE)
        ]
        adapter_config = next((path for path in configs if path.is_file()), None)
        if r["adapter"] != "aslora" or adapter_config is None:
            continue
        (out_dir / r["run_name"] / "adapter").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / "report.json", out_dir / r["run_name"] / "report.json")
        shutil.copyfile(adapter_config, out_dir / r["run_name"] / "adapter" / adapter_config.name)
        kept += 1
    return kept


def keep_reports(rows: list[dict], experiments: Path, out_dir: Path) -> int:
    """Copy every collected run's report to ``out_dir/<run_name>.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for r in rows:
        shutil.copyfile(experiments / r["run_name"] / "report.json", out_dir / f"{r['run_name']}.json")
    return len(rows)


def restore_reports(reports_dir: Path, experiments: Path) -> list[str]:
    """Put each kept report back as ``experiments/<run>/report.json`` where that run has no report
    yet; return the runs restored. Only finished reports are kept, so a restored run is skipped.

    ``<run>`` is the name today's code gives the run (:func:`hydra_glue.current_run_name`), which is
    where its job looks. Every report is read and checked first, and nothing is written if one is
    not a finished run's report; a run directory that is a symbolic link is refused, never written
    through."""
    paths = sorted(reports_dir.glob("*.json"))
    # every report checked before anything is written
    targets = {path: experiments / current_run_name(load_report(path)) / "report.json" for path in paths}
    links = [str(t.parent) for t in targets.values() if t.parent.is_symlink() or t.is_symlink()]
    if links:
        raise ValueError(f"run directories that are symbolic links, not written through: {', '.join(links)}")
    restored = []
    for path, target in targets.items():
        if not target.exists():  # a report there (an unfinished run's: it resumes) is the run's own
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            restored.append(target.parent.name)
    return restored


def write_csv(rows: list[dict], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _blank(value):
    return "" if value is None else value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", type=Path, default=ROOT / "experiments")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "runs.csv")
    parser.add_argument("--replace", action="store_true", help="drop the rows of runs not under --experiments")
    parser.add_argument(
        "--restore",
        action="store_true",
        help="copy results/reports/<run>.json back to <experiments>/<run>/report.json where missing (<run>: "
        "the name today's code gives the run), so grids skip committed runs; collect nothing",
    )
    args = parser.parse_args(argv)
    reports_dir = args.out.parent / "reports"
    if args.restore:
        try:
            restored = restore_reports(reports_dir, args.experiments)
        except ValueError as error:
            print(f"collect_results --restore: {error}; nothing written", file=sys.stderr)
            return 1
        print(f"{len(restored)} finished runs restored from {reports_dir} → {args.experiments}")
        return 0
    try:
        rows = collect(args.experiments)  # every report checked before anything is written
    except ValueError as error:
        print(f"collect_results: {error}; nothing written", file=sys.stderr)
        return 1
    kept = []
    if args.out.is_file() and not args.replace:
        found = {r["run_name"] for r in rows}
        with open(args.out, newline="") as f:
            kept = [{c: r.get(c, "") for c in COLUMNS} for r in csv.DictReader(f) if r["run_name"] not in found]
    write_csv(sorted(kept + rows, key=lambda r: r["run_name"]), args.out)
    print(f"{len(rows)} finished runs collected, {len(kept)} kept from before → {args.out}")
    kept = keep_sharing_inputs(rows, args.experiments, args.out.parent / "sharing")
    print(f"{kept} ASLoRA runs' sharing inputs → {args.out.parent / 'sharing'}")
    print(f"{keep_reports(rows, args.experiments, reports_dir)} reports → {reports_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
