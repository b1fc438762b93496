"""A checkpoint is checked whole against the run that would resume it, before any file is written.

The manifest's hashes catch a truncated or corrupted write, and the fingerprint a checkpoint of
another configuration — both are fields the folder declares about itself, so they guard against
accidents, not against someone who can write there (``docs/reliability.md``). What a resume then
*reads* is checked here as untrusted input, every field against what this run would have produced:

* **the model**: exactly the trainable tensors and pool buffers of this adapted model — no key
  missing, none extra, every shape and dtype its own, every float finite;
* **the pool**: the layer→B map is what replaying the merge log gives, every tie at a step of the
  run's merge schedule no later than the checkpoint's, retired B's (and their means) at zero, the
  running means' count equal to the optimizer steps taken;
* **the position**: ``step + skipped == (epoch − 1)·steps_per_epoch + batches_done`` within the run's
  plan, one record per finished epoch, a best epoch among them;
* **the optimizer and scheduler**: the groups, parameters and hyper-parameters this run's
  configuration builds (AdamW's betas, eps, weight decay; each group's initial lr), the lr the
  warm-up/decay schedule gives at ``step``, moments shaped as their parameters and finite.

:func:`read_resume_point` reads and checks; ``run`` calls it before the run's directory is touched
and ``fit`` again for library callers. Each refusal is a ``ValueError`` naming the file and field.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aslora.adapters.pools import find_pool
from aslora.harness.runs.plan import RunPlan
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.state import checkpoint as ckpt
from aslora.harness.state.trained_state import check_model_state
from aslora.harness.training.optimization import build_optimization


@dataclass(frozen=True)
class ResumePoint:
    directory: Path
    state: dict[str, Any]
    rng: dict[str, Any]


def read_resume_point(
    directory: Path,
    fingerprint: str | None,
    allow_pickle: bool,
    rank: int,
    model: nn.Module,
    settings: TrainSettings,
    plan: RunPlan,
) -> ResumePoint | None:
    """The newest valid checkpoint under ``directory``, read and checked whole against ``model``
    (adapted, not yet trained), ``settings`` and the run's ``plan``; ``None`` where there is none."""
    found = ckpt.check_resumable(directory, fingerprint, allow_pickle)
    if found is None:
        return None
    state = ckpt.load_state(found, allow_pickle)
    rng = ckpt.load_rng(found, rank, allow_pickle)
    check_resume_state(state, model, settings, plan, found / f"{ckpt.STATE}.json")
    return ResumePoint(found, state, rng)


def check_resume_state(
    state: dict[str, Any], model: nn.Module, settings: TrainSettings, plan: RunPlan, source: Path | str
) -> None:
    """Raises ``ValueError`` naming ``source`` and the field where ``state`` is not what this run
    (``model`` as adapted, ``settings``, ``plan``) would have written."""
    where = str(source)
    step = _position(state, settings, plan, where)
    check_model_state(model, state["model"], where)
    best = state["result"].get("best_state")
    if best is not None:  # the best epoch's weights: what the run saves as its adapter
        check_model_state(model, best, f"{where} (result.best_state)")
    _pool(model, state["model"], step, plan, where)
    _optimization(state, model, settings, plan, step, where)


# --- position ---------------------------------------------------------------------------------
def _int(value: Any, field: str, low: int, high: int, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{where}: {field}={value!r} must be an integer in [{low}, {high}] for this run")
    return value


def _position(state: dict[str, Any], settings: TrainSettings, plan: RunPlan, where: str) -> int:
    step = _int(state["step"], "step", 0, plan.total_steps, where)
    epoch = _int(state["epoch"], "epoch", 1, settings.epochs, where)
    batches = _int(state["batches_done"], "batches_done", 0, plan.steps_per_epoch, where)
    result = state["result"]
    if not isinstance(result, dict):
        raise ValueError(f"{where}: result must be a mapping")
    skipped = _int(result.get("skipped_steps", 0), "result.skipped_steps", 0, plan.total_steps, where)
    if step + skipped != (epoch - 1) * plan.steps_per_epoch + batches:
        raise ValueError(
            f"{where}: step {step} + skipped {skipped} is not the batches of epoch {epoch}, batch {batches} "
            f"at {plan.steps_per_epoch} steps an epoch: the position is inconsistent"
        )
    losses = state["epoch_losses"]
    if not isinstance(losses, list) or len(losses) > batches or not all(isinstance(x, float) for x in losses):
        raise ValueError(f"{where}: epoch_losses must be a list of at most batches_done={batches} floats")
    epochs = result.get("epochs", [])
    if not isinstance(epochs, list) or len(epochs) != epoch - 1 or not all(isinstance(e, dict) for e in epochs):
        raise ValueError(f"{where}: result.epochs must hold one record per finished epoch ({epoch - 1})")
    best = result.get("best_epoch")
    if best is not None and (not isinstance(best, int) or isinstance(best, bool) or not 1 <= best < epoch):
        raise ValueError(f"{where}: result.best_epoch={best!r} is not a finished epoch (1–{epoch - 1})")
    seconds = result.get("train_seconds", 0.0)
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 <= seconds < math.inf:
        raise ValueError(f"{where}: result.train_seconds={seconds!r} must be a finite non-negative number")
    return step


# --- the pool -----------------------------------------------------------------------------------
def _pool(model: nn.Module, saved: dict[str, Any], step: int, plan: RunPlan, where: str) -> None:
    pool = find_pool(model)
    if pool is None:
        return
    prefix = next(f"{n}." for n, m in model.named_modules() if m is pool)
    b_map = saved[prefix + "b_map"].tolist()
    num_merges = int(saved[prefix + "num_merges"])
    log = saved[prefix + "merge_log"]
    slots = list(pool.slots.values())
    for slot, row in zip(slots, b_map, strict=True):
        if not 0 <= row < len(pool.row_names[slot.bank]):
            raise ValueError(f"{where}: b_map gives layer {slot.key} row {row}, outside its group {slot.bank!r}")
    if not 0 <= num_merges <= log.shape[0]:
        raise ValueError(f"{where}: num_merges={num_merges} is outside [0, {log.shape[0]}]")
    if log[num_merges:].count_nonzero():
        raise ValueError(f"{where}: merge_log has entries past num_merges={num_merges}")
    # replay the log on the initial map: it must lead to the saved map, tie by tie at planned steps
    rows = [slot.row for slot in slots]
    planned = {s for s in plan.merge_steps if s <= step}
    for entry in log[:num_merges].tolist():
        tie_step, bank_index, lower, upper, distance = entry
        if not all(float(x).is_integer() for x in (tie_step, bank_index, lower, upper)) or not math.isfinite(distance):
            raise ValueError(f"{where}: merge_log row {entry} is not (step, group, row, row, distance)")
        if int(tie_step) not in planned:
            raise ValueError(
                f"{where}: merge_log has a tie at step {int(tie_step)}, not a merge step of this run's plan "
                f"up to step {step} ({sorted(planned)})"
            )
        if not 0 <= bank_index < len(pool.bank_names):
            raise ValueError(f"{where}: merge_log names merge group {int(bank_index)}, which this model lacks")
        bank = pool.bank_names[int(bank_index)]
        live = {r for s, r in zip(slots, rows, strict=True) if s.bank == bank}
        if lower == upper or lower not in live or upper not in live:
            raise ValueError(f"{where}: merge_log ties row {int(lower)} to {int(upper)} of {bank!r}, not two live rows")
        rows = [int(upper) if s.bank == bank and r == lower else r for s, r in zip(slots, rows, strict=True)]
    if rows != b_map:
        raise ValueError(f"{where}: b_map {b_map} is not what its merge_log leads to ({rows})")
    expected_updates = step if pool.track_running_means else 0
    if int(saved[prefix + "num_mean_updates"]) != expected_updates:
        raise ValueError(
            f"{where}: num_mean_updates={int(saved[prefix + 'num_mean_updates'])} (the running means' count) "
            f"is not {expected_updates}, the optimizer steps taken"
        )
    live_names = {pool.row_names[s.bank][r] for s, r in zip(slots, rows, strict=True)}
    for name in pool.lora_B.keys():
        if name in live_names:
            continue
        held = [prefix + f"lora_B.{name}"] + ([prefix + f"running_mean_B.{name}"] if pool.track_running_means else [])
        if any(saved[key].count_nonzero() for key in held if key in saved):
            raise ValueError(f"{where}: retired B {name!r} (or its running mean) is not zero, as a tie leaves it")


# --- optimizer and scheduler ------------------------------------------------------------------------
def _optimization(
    state: dict[str, Any], model: nn.Module, settings: TrainSettings, plan: RunPlan, step: int, where: str
) -> None:
    # what this run's configuration builds (no state yet): nothing of the model is touched
    fresh, scheduler = build_optimization(model, settings, plan.warmup_steps, plan.total_steps)
    factor = scheduler.lr_lambdas[0](step)
    own = fresh.state_dict()
    saved = state["optimizer"]
    if not isinstance(saved, dict) or set(saved) != {"state", "param_groups"}:
        raise ValueError(f"{where}: optimizer must be AdamW's state (state, param_groups)")
    groups = saved["param_groups"]
    if not isinstance(groups, list) or len(groups) != len(own["param_groups"]):
        raise ValueError(
            f"{where}: optimizer has {len(groups) if isinstance(groups, list) else groups!r} parameter groups; "
            f"this run's configuration builds {len(own['param_groups'])}"
        )
    shapes = {}
    for index, (group, mine, params) in enumerate(zip(groups, own["param_groups"], fresh.param_groups, strict=True)):
        if not isinstance(group, dict) or set(group) != set(mine):
            raise ValueError(f"{where}: optimizer group {index} has fields {sorted(group)}, not AdamW's {sorted(mine)}")
        if group["params"] != mine["params"]:
            raise ValueError(f"{where}: optimizer group {index} holds other parameters than this run's")
        shapes.update({i: p.shape for i, p in zip(mine["params"], params["params"], strict=True)})
        for key, value in mine.items():
            if key in ("params", "lr"):
                continue
            if group[key] != value:
                raise ValueError(
                    f"{where}: optimizer group {index} has {key}={group[key]!r}; this run's configuration gives {value!r}"
                )
        expected_lr = mine["initial_lr"] * factor
        if not isinstance(group["lr"], float) or not math.isclose(
            group["lr"], expected_lr, rel_tol=1e-9, abs_tol=1e-15
        ):
            raise ValueError(
                f"{where}: optimizer group {index} has lr={group['lr']!r}; at step {step} this run's schedule "
                f"gives {expected_lr!r}"
            )
    moments = saved["state"]
    if not isinstance(moments, dict) or not set(moments) <= set(shapes):
        raise ValueError(f"{where}: optimizer state names parameters this run does not have")
    for index, entry in moments.items():
        if not isinstance(entry, dict) or set(entry) != {"step", "exp_avg", "exp_avg_sq"}:
            raise ValueError(
                f"{where}: optimizer state of parameter {index} is not AdamW's (step, exp_avg, exp_avg_sq)"
            )
        count = entry["step"]
        if not torch.is_tensor(count) or count.numel() != 1 or not 0 <= float(count) <= step:
            raise ValueError(f"{where}: optimizer state of parameter {index} has step {count!r}, not in [0, {step}]")
        for key in ("exp_avg", "exp_avg_sq"):
            moment = entry[key]
            if not torch.is_tensor(moment) or moment.shape != shapes[index] or not moment.is_floating_point():
                raise ValueError(f"{where}: optimizer {key} of parameter {index} is not shaped as its parameter")
            if not torch.isfinite(moment).all() or (key == "exp_avg_sq" and (moment < 0).any()):
                raise ValueError(f"{where}: optimizer {key} of parameter {index} holds non-finite or negative values")
    _scheduler(state["scheduler"], scheduler.state_dict(), step, where)


def _scheduler(saved: Any, own: dict[str, Any], step: int, where: str) -> None:
    if not isinstance(saved, dict) or set(saved) != set(own):
        raise ValueError(f"{where}: scheduler is not this run's linear warm-up/decay schedule's state")
    if saved["base_lrs"] != own["base_lrs"]:
        raise ValueError(
            f"{where}: scheduler base_lrs={saved['base_lrs']!r}; this run's configuration gives {own['base_lrs']!r}"
        )
    if saved["last_epoch"] != step or saved["_step_count"] != step + 1:
        raise ValueError(
            f"{where}: scheduler counts {saved['last_epoch']!r} steps ({saved['_step_count']!r} calls); "
            f"the checkpoint is at step {step}"
        )
    if saved["lr_lambdas"] != own["lr_lambdas"]:
        raise ValueError(f"{where}: scheduler lr_lambdas={saved['lr_lambdas']!r} are not this run's")
