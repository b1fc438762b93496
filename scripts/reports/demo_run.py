"""What ``make demo`` measured, on the page: results/README's ``demo_run`` block from the kept report.

    python -m scripts.reports.demo_run [--keep experiments/minilm-l6_rt_polarity_aslora_s42/report.json] [--readme results/README.md]

``--keep`` copies a finished default run's report to ``results/demo/report.json`` — only a run of a
clean tree (``git_dirty: false``), since every number in results/ must come from committed code —
then the block is written from the kept report: the commit, hardware and wall time; the run's plan
(steps, warm-up) and where its ties fell against the schedule the paper's Algorithm 1 gives
(``T_s + k·m``, with ``T_s = ⌊start fraction · steps⌋`` and ``m = ⌊interval fraction · steps⌋``); the best
validation epoch, the test score there, and the size of the adapter behind that score beside the
size the run ends with (the best epoch can come before the last tie, so the two differ).
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

from aslora.harness.runs.report import adapter_size_at_best
from hydra_glue import ROOT
from scripts.reports.make_tables import fill_readme

KEPT = ROOT / "results" / "demo" / "report.json"


def keep(report_path: Path, kept: Path = KEPT) -> None:
    """Copy a finished run's report to ``kept``, refusing an unfinished run or one of a dirty tree."""
    if not report_path.is_file():
        raise SystemExit(f"{report_path} not found: run `make demo` first")
    report = json.loads(report_path.read_text())
    if report.get("status") != "done":
        raise SystemExit(f"{report_path} says status {report.get('status')!r}: keep only a finished run")
    if report["environment"].get("git_dirty") is not False:
        raise SystemExit(
            f"{report_path} ran from a dirty tree (git_dirty: {report['environment'].get('git_dirty')}): "
            f"rerun `make demo` on a clean clone"
        )
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(report_path, kept)


def _minutes(seconds: float) -> str:
    whole = round(seconds)
    return f"{whole // 60} min {whole % 60:02d} s"


def demo_text(report: dict) -> str:
    env, plan, params = report["environment"], report["plan"], report["params"]
    adapter = report["config"]["adapter"]["params"]
    total = plan["total_steps"]
    # recomputed here, not asked of ASLoRAConfig.resolve_schedule (which made the plan): the paragraph
    # prints this formula, and the check below is then one the plan could fail
    start = math.floor(adapter["merge_start_fraction"] * total)
    interval = max(1, math.floor(adapter["merge_interval_fraction"] * total))
    ties = sorted({m["step"] for m in report["merge_history"]})
    per_type = Counter(m["group"] for m in report["merge_history"])
    algorithm = [start + k * interval for k in range(1, len(ties) + 1)]
    where = (
        "the steps Algorithm 1 gives"
        if ties == plan["merge_steps"] == algorithm
        else f"the plan said {plan['merge_steps']}, Algorithm 1 gives {algorithm}"
    )
    best, metric = report["best"], report["main_metric"]
    lora = params["lora_reference"]
    at_best = adapter_size_at_best(report)
    after = params["after"]["adapter"]
    counts = ", ".join(f"{n} for {group}" for group, n in per_type.items())
    return (
        f"`make demo` (the install, then `python train.py`) on a clean clone of commit `{env['git_sha'][:7]}`, "
        f"{env['device']}, torch {env['packages']['torch']}: {report['model']} + ASLoRA on {report['task']} "
        f"(stand-in for {report['task_standin_for']}), {report['train_examples']:,} training examples, "
        f"{report['config']['train']['epochs']} epochs = {total} steps, warm-up {plan['warmup_steps']}; "
        f"{_minutes(report['wall_seconds'])} wall for the run. Ties ({counts}) at steps "
        f"{', '.join(map(str, ties))} — {where}: T_s = ⌊{adapter['merge_start_fraction']:g} · {total}⌋ = {start}, "
        f"m = ⌊{adapter['merge_interval_fraction']:g} · {total}⌋ = {interval}, the first tie at T_s + m, "
        f"{100 * (start + interval) / total:.1f} % of the run. Best validation {metric} "
        f"{best['validation'][metric]:.4f} at epoch {best['epoch']}, test {metric} {best['test'][metric]:.4f} there. "
        f"The adapter behind that score has {at_best:,} parameters ({100 * at_best / lora:.1f} % of LoRA's "
        f"{lora:,}); the run ends with {after:,} ({100 * after / lora:.1f} %)"
        + (", so that score is not the final adapter's." if at_best != after else ", the final adapter's size.")
        + "\n"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, default=None, help="a finished default run's report.json to keep first")
    parser.add_argument("--kept", type=Path, default=KEPT)
    parser.add_argument("--readme", type=Path, default=ROOT / "results" / "README.md")
    args = parser.parse_args(argv)
    if args.keep is not None:
        keep(args.keep, args.kept)
    if not args.kept.is_file():
        raise SystemExit(f"{args.kept} not found: keep a default run's report with --keep")
    text = "<!-- generated by scripts/reports/demo_run.py; do not edit -->\n" + demo_text(
        json.loads(args.kept.read_text())
    )
    filled = fill_readme(args.readme, {"demo_run": text}, owns=lambda name: name == "demo_run")
    print(f"filled {', '.join(filled) or 'no'} block(s) in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
