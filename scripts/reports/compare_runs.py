"""Does a run reproduce? Two reports of the same configuration compared epoch by epoch.

    python -m scripts.reports.compare_runs results/reports/<run>.json experiments/<rerun>/report.json

Used to check that a row whose report says ``git_dirty: true`` (the tree held uncommitted changes,
and old reports kept no diff) reproduces when rerun at a clean commit. It compares, in order:

* the configuration both ran (``config`` without the fields that name where or how a run was
  launched: output paths, progress bars, the tracker), so a mismatch there is reported first;
* every epoch's step, validation and test metrics: those that count predictions (accuracy, F1 …)
  exactly, losses to ``--loss-tolerance`` (float rounding across code versions moves them);
* the ties (step, kept B, retired B) — ASLoRA's discrete decisions, which either agree or do not;
* the best epoch and its scores;
* the training loss per epoch (largest absolute difference: float rounding shows up here first).

It prints one line per item and a last line: ``reproduces`` when the configuration, every epoch's
counted metrics, the ties and the best epoch are identical and the losses differ by at most
``--loss-tolerance``;
``differs`` otherwise, naming what. Exit status 0 either way (a comparison, not a check), 2 on
unreadable input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aslora.json_file import read_json

LAUNCH_ONLY = {
    "run_name", "run_prefix", "experiments_dir", "overwrite", "resume", "validate_only", "kill_after_step",
    "metrics_csv", "checkpoint", "wandb", "progress_bar",
}  # fmt: skip
"""Config keys that say where or how a run was launched and logged, not what it computed."""


def _config(report: dict[str, Any]) -> dict[str, Any]:
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in LAUNCH_ONLY}
        return value

    return strip(report.get("config", {}))


_ABSENT = object()


def _diff_keys(a: Any, b: Any, path: str = "") -> tuple[list[str], list[str]]:
    """Dotted paths where two nested configs differ: ``(different values, keys only one side has)``.
    A key only one side has is a setting added (or removed) between the two code versions; it is
    listed, and counts only if the computation then differs."""
    if isinstance(a, dict) and isinstance(b, dict):
        differ, one_sided = [], []
        for key in sorted(set(a) | set(b)):
            d, o = _diff_keys(a.get(key, _ABSENT), b.get(key, _ABSENT), f"{path}.{key}" if path else key)
            differ, one_sided = differ + d, one_sided + o
        return differ, one_sided
    if a is _ABSENT or b is _ABSENT:
        return [], [path]
    return ([] if a == b else [path]), []


CONTINUOUS = {"loss", "perplexity"}
"""Metrics of a continuous value: float rounding across code versions moves them a little, so they
are held to ``--loss-tolerance``; every other metric (accuracy, F1, MCC …) counts predictions, and a
prediction either agrees or does not."""


def _metric_gaps(a: list[dict], b: list[dict], split: str) -> tuple[dict[str, float], set[str]]:
    """Each metric of a split both reports record: the largest absolute difference over matching
    epochs; and the metrics only one records (a later code version logs more)."""
    gaps: dict[str, float] = {}
    one_sided: set[str] = set()
    for x, y in zip(a, b, strict=False):
        mx, my = x.get(split) or {}, y.get(split) or {}
        one_sided |= set(mx) ^ set(my)
        for key in set(mx) & set(my):
            gaps[key] = max(gaps.get(key, 0.0), abs(float(mx[key]) - float(my[key])))
    return gaps, one_sided


def compare(a: dict[str, Any], b: dict[str, Any], loss_tolerance: float = 1e-4) -> tuple[list[str], bool]:
    """The lines to print and whether ``b`` reproduces ``a``."""
    lines, problems = [], []
    config_diff, one_sided = _diff_keys(_config(a), _config(b))
    lines.append(f"configuration: {'identical' if not config_diff else 'differs at ' + ', '.join(config_diff)}")
    if one_sided:
        lines.append(f"settings only one report has (other code versions): {', '.join(one_sided)}")
    if config_diff:
        problems.append("configuration")
    ea, eb = a.get("epochs", []), b.get("epochs", [])
    steps_same = [e.get("step") for e in ea] == [e.get("step") for e in eb]
    lines.append(f"epochs: {len(ea)} and {len(eb)}, steps {'identical' if steps_same else 'differ'}")
    if not steps_same:
        problems.append("epochs")
    for split in ("val", "test"):
        gaps, one_sided = _metric_gaps(ea, eb, split)
        shown = ", ".join(f"{k} {'identical' if g == 0 else f'±{g:.2g}'}" for k, g in sorted(gaps.items()))
        shown += "".join(f", {k} only in one report" for k in sorted(one_sided))
        lines.append(f"{split} metrics of every epoch: {shown or 'none'}")
        off = [k for k, g in gaps.items() if g > (loss_tolerance if k in CONTINUOUS else 0.0)]
        if off:
            problems.append(f"{split} {'/'.join(sorted(off))}")
    ties_a = [(t.get("step"), t.get("kept"), t.get("retired")) for t in a.get("merge_history", [])]
    ties_b = [(t.get("step"), t.get("kept"), t.get("retired")) for t in b.get("merge_history", [])]
    lines.append(f"ties: {len(ties_a)} and {len(ties_b)}, {'identical' if ties_a == ties_b else 'differ'}")
    if ties_a != ties_b:
        problems.append("ties")
    best_a, best_b = a.get("best", {}), b.get("best", {})
    # the selection metric is held as the metrics are: a loss to the tolerance, a count exactly
    continuous = a.get("main_metric") in CONTINUOUS and b.get("main_metric") in CONTINUOUS
    metric_gap = abs(float(best_a.get("metric", 0.0)) - float(best_b.get("metric", 0.0)))
    best_same = best_a.get("epoch") == best_b.get("epoch") and metric_gap <= (loss_tolerance if continuous else 0.0)
    lines.append(
        f"best epoch: {best_a.get('epoch')} and {best_b.get('epoch')}, its selection metric "
        f"{best_a.get('metric')} and {best_b.get('metric')}"
    )
    if not best_same:
        problems.append("best epoch")
    losses = [
        abs(x["train_loss"] - y["train_loss"])
        for x, y in zip(ea, eb, strict=False)
        if x.get("train_loss") is not None and y.get("train_loss") is not None
    ]
    loss_gap = max(losses, default=0.0)
    lines.append(f"training loss per epoch: largest difference {loss_gap:.2g}")
    if loss_gap > loss_tolerance:
        problems.append("training loss")
    verdict = not problems
    lines.append("reproduces" if verdict else f"differs: {', '.join(problems)}")
    return lines, verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("original", type=Path, help="the report.json to reproduce")
    parser.add_argument("rerun", type=Path, help="the rerun's report.json")
    parser.add_argument("--loss-tolerance", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        a, b = (read_json(p, "a run's report.json", dict) for p in (args.original, args.rerun))
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    for side, report in (("original", a), ("rerun", b)):
        env = report.get("environment", {})
        print(f"{side}: {report.get('run_name')} · commit {str(env.get('git_sha'))[:7]} · dirty {env.get('git_dirty')}")
    lines, _ = compare(a, b, args.loss_tolerance)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
