"""One self-describing ``report.json`` per run: everything a table needs, and how it was made.

Written atomically (temporary file in the same directory, fsync, rename), so a reader — the
results collector, or a restarted ``make reproduce-*`` — sees either the whole report or none.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from aslora.json_file import read_json

if TYPE_CHECKING:  # annotations only: the results collector reads reports without the harness's imports
    from aslora.harness.inputs.data import TaskSpec
    from aslora.harness.runs.plan import RunPlan
    from aslora.harness.runs.settings import RunSettings
    from aslora.harness.training.fit_record import FitResult

REPORT_VERSION = 1
PACKAGES = (
    "aslora",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "hydra-core",
    "wandb",
    "numpy",
    "scipy",
    "scikit-learn",
)


_LEGACY_SWEPT = re.compile(r"adapter\.params\.(\w+)=(.*?)(?=,|_s\d+$)")
"""How reports written before ``variant`` existed spelled a swept adapter setting: inside the run name."""


def grid_of(report: dict[str, Any]) -> str:
    """The grid a run belongs to, as its config recorded it: ``run_prefix`` without its trailing
    ``_`` (``single`` for a lone run) — never parsed back out of the run name."""
    return (report["config"].get("run_prefix") or "").rstrip("_") or "single"


def variant_of(report: dict[str, Any]) -> dict[str, Any]:
    """What makes this run differ from its grid's defaults: ``{"adapter.params.max_merges": 2,
    "train.lr": 0.003}`` — the swept keys and their resolved values, recorded by the run itself.
    For reports written before that field existed, the adapter settings are read back from the run
    name (the only place those reports kept them)."""
    if "variant" in report:
        return dict(report["variant"])
    return {f"adapter.params.{k}": v for k, v in _LEGACY_SWEPT.findall(report["run_name"])}


def adapter_size(report: dict[str, Any], record: dict[str, Any]) -> int:
    """The adapter's parameters at the end of epoch ``record``: recorded per epoch by newer runs; for
    older ones, from the count of live B's (every B of a run has one shape, so each tie removes the
    same number: ``(before − after) / (B's before − B's after)``)."""
    if "adapter_params" in record:
        return int(record["adapter_params"])
    before, after = report["params"]["before"], report["params"]["after"]
    if "num_distinct_B" not in record or before.get("num_distinct_B") in (None, after.get("num_distinct_B")):
        return int(after["adapter"])
    per_b = (before["adapter"] - after["adapter"]) / (before["num_distinct_B"] - after["num_distinct_B"])
    return int(round(after["adapter"] + per_b * (record["num_distinct_B"] - after["num_distinct_B"])))


def adapter_size_at_best(report: dict[str, Any]) -> int:
    """The adapter's parameters at the best validation epoch — the adapter behind ``best``'s scores,
    which can precede ASLoRA's last tie (``params.at_best`` where the run recorded it)."""
    if "at_best" in report["params"]:
        return int(report["params"]["at_best"]["adapter"])
    record = next((e for e in report.get("epochs", []) if e["epoch"] == report["best"]["epoch"]), {})
    return adapter_size(report, record)


def compose_report(
    settings: RunSettings,
    spec: TaskSpec,
    container: dict[str, Any],
    result: FitResult,
    lora_reference: int,
    wall_seconds: float,
    num_train: int,
    provenance: dict[str, Any],
    *,
    adapters: dict[str, Any] | None,
    variant: dict[str, Any],
    plan: RunPlan,
    instruction: dict[str, Any],
) -> dict[str, Any]:
    """The run's ``report.json``, assembled here alone (the fields' types: :data:`DONE_FIELDS`).

    ``spec``: the run's task (``aslora.harness.inputs.data.get_task``); ``result``: what
    :func:`aslora.harness.training.loop.fit` returned; ``instruction``: an instruction-tuning run's prompt
    format and samples, ``{}`` otherwise.
    """
    adapter_dir = adapters["best"]["dir"] if adapters else None
    return {
        "report_version": REPORT_VERSION,
        "status": "done",
        "run_name": settings.run_name,
        "choices": settings.choices,
        "model": settings.model.name,
        "task": spec.name,
        "task_standin_for": spec.standin_for,
        "adapter": settings.adapter.name,
        "seed": settings.seed,
        "init_adapter_from": settings.init_adapter_from,
        "main_metric": spec.metrics[0],
        "best": {
            "metric": result.best_metric,
            "epoch": result.best_epoch,
            "validation": result.best_validation,
            "test": result.test_at_best,
        },
        "epochs": result.epochs,
        "params": {
            "before": result.params_before,
            "after": result.params_after,
            "lora_reference": lora_reference,
            "lora_reference_rank": settings.reference_lora_rank,
            "fraction_of_lora_before": result.params_before["adapter"] / lora_reference,
            "fraction_of_lora_after": result.params_after["adapter"] / lora_reference,
            # the adapter behind the reported scores: an ASLoRA run may tie again after its best epoch
            "at_best": result.params_at_best,
        },
        "merge_history": result.merge_history,
        # train.test_each_epoch: every epoch's test predictions, one character per example in the
        # dataset's order (aslora.harness.training.kept_predictions.decode_classes), and the labels
        # they are scored against
        "test_predictions": (
            {"labels": result.test_labels, "epochs": result.test_predictions} if result.test_predictions else None
        ),
        "steps": result.total_steps,
        "skipped_steps": result.skipped_steps,
        "resumed_from_step": result.resumed_from_step,
        "num_processes": result.num_processes,
        "train_examples": num_train,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall_seconds,
        "config": container,
        "environment": provenance,
        "adapters": adapters,
        "variant": variant,
        "plan": plan.as_dict(),
        **instruction,
        "adapter_dir": str(adapter_dir) if adapter_dir else None,
    }


def write_report(path: str | os.PathLike, report: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".report.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2, sort_keys=False, default=_jsonable)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_report(path: str | os.PathLike) -> dict[str, Any] | None:
    """The report at ``path``, or ``None`` if there is none or it does not parse."""
    try:
        return read_json(path, "a report", expect=dict)
    except ValueError:  # missing, unreadable, not UTF-8, not JSON, too deep, not a mapping
        return None


# what a finished report must hold, and the type of each (dotted paths): what evaluate.py and the
# results collector read from it
DONE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "run_name": str,
    "model": str,
    "task": str,
    "adapter": str,
    "main_metric": str,
    "seed": int,
    "steps": int,
    "train_seconds": (int, float),
    "config": dict,
    "config.adapter": dict,
    "config.adapter.params": dict,
    "config.train": dict,
    "config.train.lr": (int, float),
    "best": dict,
    "best.metric": (int, float),
    "best.epoch": int,
    "params": dict,
    "params.before.adapter": int,
    "params.after.adapter": int,
    "params.lora_reference": int,
    "environment": dict,
    "environment.device": str,
}


def load_report(path: str | os.PathLike) -> dict[str, Any]:
    """A finished run's report, checked: it parses (UTF-8 JSON) and holds every field a reader uses
    with its type (:data:`DONE_FIELDS`).

    Raises:
        ValueError: naming the file and the field that is missing or of the wrong type.
    """
    path = Path(path)
    report = read_json(path, "a report", expect=dict)
    if report.get("status") != "done":
        raise ValueError(f"{str(path)!r} is not a finished run's report (status {report.get('status')!r})")
    for dotted, kind in DONE_FIELDS.items():
        value: Any = report
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ValueError(
                f"{str(path)!r}: field {dotted!r} is {type(value).__name__ if value is not None else 'missing'}, "
                f"not {' or '.join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))}"
            )
    return report


def is_done(path: str | os.PathLike) -> bool:
    report = read_report(path)
    return report is not None and report.get("status") == "done"


def environment(outputs: tuple[str, ...] = ()) -> dict[str, Any]:
    """Git revision, package versions and hardware, for the report's provenance block.

    ``outputs``: paths (relative to the repository root) where the calling script writes what it
    produces; changes there do not make the tree dirty. ``make bench`` regenerates tracked files
    under ``results/`` one benchmark after another, and the code each one ran is still the commit's.
    """

    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_name()
    # pathspecs from the repository root (git runs in this file's directory)
    pathspec = ["--", ":(top)", *(f":(top,exclude){path}" for path in outputs)] if outputs else []
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no", *pathspec))
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": dirty,
        # what a dirty tree changed, so a run made from it can still be read (and redone); capped: a
        # report is a record, not an archive
        "git_diff": _cap(_git("diff", "HEAD", *pathspec), MAX_DIFF_CHARS) if dirty else None,
        # the process's own command line: how the run was launched (train.py and its overrides, a
        # grid driver, a test), not reconstructed from the config
        "command": [os.path.basename(sys.argv[0]), *sys.argv[1:]] if sys.argv and sys.argv[0] else list(sys.argv),
        "python": platform.python_version(),
        "packages": versions,
        "device": device,
        "cuda": torch.version.cuda if torch.cuda.is_available() else None,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }


MAX_DIFF_CHARS = 200_000


def _cap(text: str | None, limit: int) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters not kept]"


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], capture_output=True, text=True, timeout=10, cwd=Path(__file__).resolve().parent
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} to a report")
