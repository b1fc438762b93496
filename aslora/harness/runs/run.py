"""One run, step by step: validate → build → adapt → fit → evaluate → report.

Everything that can be checked without loading weights is checked first (settings, data and
model availability, the adapter config, the merge schedule against the run's length), so bad
input fails in seconds and leaves nothing behind; the report is written once, atomically, at the end.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import torch
from accelerate import PartialState
from accelerate.utils import set_seed
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from aslora.adapters.config import SharedLoRAConfig
from aslora.adapters.dispatch import apply_adapter
from aslora.adapters.inject import find_targets
from aslora.adapters.pools import find_pool
from aslora.export import check_lora_adapter_dir, init_lora_from, save_adapter
from aslora.harness.inputs.data import check_task_available, get_task, load_task
from aslora.harness.inputs.instruct import IGNORE_INDEX
from aslora.harness.inputs.models import check_model_available, load_causal_lm, load_classifier
from aslora.harness.measuring.tracking import Tracker
from aslora.harness.runs.plan import RunPlan
from aslora.harness.runs.report import compose_report, environment, is_done, read_report, write_report
from aslora.harness.runs.run_dir import check_no_links
from aslora.harness.runs.run_record import RunRecord
from aslora.harness.runs.settings import RunSettings
from aslora.harness.state.resume_check import read_resume_point
from aslora.harness.training.fit_record import FitOptions
from aslora.harness.training.loop import fit
from aslora.params import lora_parameter_count

log = logging.getLogger("aslora")


class RunRefused(ValueError):
    """The run's configuration or inputs were refused before anything loaded or was written: the
    message says what to set. ``train.py`` prints it alone (a bug's traceback is kept)."""


def run(
    container: dict[str, Any],
    choices: dict[str, str] | None = None,
    swept: Sequence[str] = (),
    overrides: Sequence[str] = (),
) -> float | None:
    """Run the experiment ``container`` describes (a resolved config); return the best metric.
    ``swept``: the config keys that distinguish this run within its grid (``train.py`` passes the
    overrides that name it); the report records each with its resolved value as ``variant``.
    ``overrides``: the command line's overrides, kept with the config and the log in the run's
    directory once the run has passed validation (:mod:`aslora.harness.runs.run_record`)."""
    with RunRecord() as record:
        return _run(container, choices, swept, overrides, record)


def _run(
    container: dict[str, Any],
    choices: dict[str, str] | None,
    swept: Sequence[str],
    overrides: Sequence[str],
    record: RunRecord,
) -> float | None:
    started = time.perf_counter()
    provenance = environment()  # at the start: the code that runs, not what HEAD is when it ends
    try:  # everything checked before loading: a ValueError here is a refusal of the input, not a bug
        settings = RunSettings.from_dict(container, choices)
        if is_done(settings.report_path) and not settings.overwrite:
            previous = read_report(settings.report_path)
            log.info("skipping %s: %s says done (overwrite=true to rerun)", settings.run_name, settings.report_path)
            return previous["best"]["metric"]
        spec = get_task(settings.task.name)
        check_before_loading(settings)
    except ValueError as error:
        raise RunRefused(str(error)) from error
    if settings.validate_only:
        log.info("%s: configuration valid (validate_only=true: nothing loaded, nothing written)", settings.run_name)
        return None

    # build — seeded first: the new task head and the adapter's A are drawn from the global RNG

    set_seed(settings.seed)
    causal_lm = spec.kind == "causal_lm"
    tokenizer, model = _load_base(settings, spec)
    data = load_task(
        spec,
        tokenizer,
        max_length=settings.task.max_length,
        max_train_examples=settings.task.max_train_examples,
        max_eval_examples=settings.task.max_eval_examples,
        split_seed=settings.task.split_seed,
        local_dir=settings.task.local_dir,
    )
    plan = settings.plan(len(data.train))  # the run's one plan: an impossible schedule fails before adapting
    _announce(settings, spec, plan)
    lora_reference = lora_parameter_count(_target_shapes(model, settings.target_modules), settings.reference_lora_rank)

    # adapt
    model = apply_adapter(model, plan.adapter_config)
    if settings.init_adapter_from is not None:
        loaded = init_lora_from(model, settings.init_adapter_from)
        log.info("LoRA A and B initialised from %s (%d tensors; the head is fresh)", settings.init_adapter_from, loaded)

    # Under accelerate launch / torchrun one process reports. The shared state is created once per
    # process, so it must get the flags fit()'s Accelerator uses, or no process group forms on CPU.
    process = PartialState(cpu=not torch.cuda.is_available())
    is_main = process.is_main_process
    resume_point = None
    if settings.resume and settings.checkpoint.every_steps:
        try:  # the whole checkpoint read and checked before the run's directory is touched; fit reuses it
            resume_point = read_resume_point(
                settings.checkpoint_dir,
                settings.fingerprint(),
                settings.checkpoint.allow_pickle,
                process.process_index,
                model,
                settings.train,
                plan,
            )
        except ValueError as error:
            raise RunRefused(str(error)) from error
    if is_main:  # validated and adapted: from here on the run has a home; its config, overrides and log go there
        record.keep(settings.run_dir, container, overrides)

    # fit + evaluate

    # causal LM: labels padded with IGNORE_INDEX (skipped by the loss) alongside the inputs
    collate = (
        DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        if causal_lm
        else DataCollatorWithPadding(tokenizer)
    )
    tracker_settings = settings.wandb if is_main else dataclasses.replace(settings.wandb, mode="disabled")
    group = (settings.choices or {}).get("sweep") or str(container.get("run_prefix") or "").rstrip("_") or None
    with Tracker(
        tracker_settings,
        settings.run_name,
        container,
        run_dir=settings.run_dir,
        group=group,
        metrics_csv=settings.metrics_csv and is_main,
        resume=settings.resume,
    ) as tracker:
        options = FitOptions(
            checkpoint_dir=settings.checkpoint_dir if settings.checkpoint.every_steps else None,
            checkpoint_every_steps=settings.checkpoint.every_steps,
            keep_last_checkpoints=settings.checkpoint.keep_last,
            resume=settings.resume,
            kill_after_step=settings.kill_after_step,
            allow_pickle=settings.checkpoint.allow_pickle,
            fingerprint=settings.fingerprint(),
            resume_point=resume_point,
        )
        result = fit(model, data, collate, settings.train, tracker.log, options, plan=plan)
        if not is_main:
            return result.best_metric
        if result.final_state is not None:  # FSDP: a plain copy of the trained model, for saving and sampling
            model = _rebuild(settings, spec, plan.adapter_config, result.final_state)
        adapters = _save_best_and_last(model, result, settings.run_dir)
        adapter_dir = adapters["best"]["dir"] if adapters else None
        wall_seconds = time.perf_counter() - started  # before sampling, as the report has always counted it
        instruction = {}
        if causal_lm:
            from aslora.harness.inputs import instruct

            instruction = {
                "prompt_format": instruct.prompt_format(tokenizer),
                # from the weights now in the model: the best epoch's adapter, the one the scores describe
                "samples": instruct.generate_samples(model, tokenizer, data.samples or []),
            }
        report = compose_report(
            settings,
            spec,
            container,
            result,
            lora_reference,
            wall_seconds,
            len(data.train),
            provenance,
            adapters=adapters,
            variant={key: _lookup(container, key) for key in swept},
            plan=plan,
            instruction=instruction,
        )
        tracker.log(
            {f"params/{k}": v for k, v in report["params"]["after"].items() if v is not None}, result.total_steps
        )
        tracker.summary(
            {
                "best/metric": result.best_metric,
                "best/epoch": result.best_epoch,
                "params/fraction_of_lora": report["params"]["fraction_of_lora_after"],
            }
        )
        write_report(settings.report_path, report)
        if tracker.run is not None and report["merge_history"] and adapter_dir is not None:
            from aslora.export import read_adapter_meta
            from aslora.harness.measuring.figures import plot_sharing_map, plot_timeline

            tracker.merge_table(report["merge_history"])
            adapter_meta = read_adapter_meta(adapters["last"]["dir"])  # the sharing at the end, as captioned
            tracker.images(
                [plot_sharing_map(report, adapter_meta, settings.run_dir), plot_timeline(report, settings.run_dir)]
            )
    log.info(
        "%s: best %s %.4f at epoch %s; adapter %s; report %s",
        settings.run_name,
        spec.metrics[0],
        result.best_metric,
        result.best_epoch,
        _sizes(report["params"], settings.reference_lora_rank),
        settings.report_path,
    )
    return result.best_metric


def check_before_loading(settings: RunSettings, num_processes: int | None = None) -> RunPlan:
    """Everything about a run that can be checked without loading weights or data, in seconds
    (:func:`check_sources`, then :func:`check_run_inputs`). ``run`` calls it before loading; the grid
    preflight (``scripts/grids/preflight.py``) calls the two parts for every job of a grid before its first
    job starts. Raises ``ValueError`` saying what to set; returns the pre-load plan."""
    return check_run_inputs(settings, num_processes, check_sources(settings))


def check_sources(settings: RunSettings) -> int | None:
    """The task's data and the model's weights can be had here: local GLUE files with every split the
    task reads (each read and checked), a package installed, or the Hub reachable under ``hub=true``.
    Returns the number of training rows where the check read them (local files), else ``None``."""
    spec = get_task(settings.task.name)
    rows = check_task_available(spec, hub_enabled=settings.hub, local_dir=settings.task.local_dir)
    check_model_available(settings.model, hub_enabled=settings.hub)
    return rows


def check_run_inputs(settings: RunSettings, num_processes: int | None = None, train_rows: int | None = None) -> RunPlan:
    """The merge schedule fits the run under ``num_processes`` (default: this launch's ``WORLD_SIZE``)
    at ``train_rows`` training examples (local files' count, capped by ``task.max_train_examples``;
    default: the task's published size), an ``init_adapter_from`` adapter exists and is LoRA's, and a
    checkpoint to resume would be accepted, and the run's directory holds no symbolic link (the run
    writes and deletes there). Returns the pre-load plan."""
    check_no_links(settings.run_dir)
    if train_rows is not None and settings.task.max_train_examples is not None:
        train_rows = min(train_rows, settings.task.max_train_examples)
    plan = settings.plan(train_rows, num_processes=num_processes)
    if settings.init_adapter_from is not None:
        check_lora_adapter_dir(settings.init_adapter_from)
    if settings.resume and settings.checkpoint.every_steps:
        from aslora.harness.state.checkpoint import check_resumable

        check_resumable(settings.checkpoint_dir, settings.fingerprint(), settings.checkpoint.allow_pickle)
    return plan


def _sizes(params: dict[str, Any], rank: int) -> str:
    """``27648 params at the best epoch (37.5 % of LoRA r=8), 15360 at the end (20.8 %)`` — an ASLoRA
    run can tie again after its best epoch, and the saved adapter/ is the best epoch's."""
    reference, after = params["lora_reference"], params["after"]["adapter"]
    at_best = (params.get("at_best") or {}).get("adapter", after)
    if at_best == after:
        return f"{after} params ({100 * after / reference:.1f} % of LoRA r={rank})"
    return (
        f"{at_best} params at the best epoch ({100 * at_best / reference:.1f} % of LoRA r={rank}), "
        f"{after} at the end ({100 * after / reference:.1f} %)"
    )


def _lookup(container: dict[str, Any], dotted: str) -> Any:
    """``container["adapter"]["params"]["max_merges"]`` for ``"adapter.params.max_merges"`` (``None`` if absent)."""
    value: Any = container
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _announce(settings: RunSettings, spec: Any, plan: RunPlan) -> None:
    """The resolved run in a few lines, before training: what runs, how long, when ASLoRA ties."""
    train = settings.train
    standin = f" (stand-in for {spec.standin_for})" if spec.standin_for else ""
    params = settings.adapter.params
    adapter = settings.adapter.name + (f" r={params['r']}" if "r" in params else "")
    per_process = f" per process ({plan.num_processes} processes)" if plan.num_processes > 1 else ""
    lines = [
        f"run {settings.run_name}",
        f"  model {settings.model.name} · task {spec.name}{standin} · adapter {adapter} on {_targets(settings)}",
        f"  {plan.num_train_examples:,} training examples (max length {settings.task.max_length}) · {train.epochs} "
        f"epoch(s) × {plan.steps_per_epoch} steps = {plan.total_steps} steps{per_process} at batch {train.batch_size} · "
        f"lr {train.lr:g}"
        f"{f', head lr {train.head_lr:g}' if train.head_lr else ''}"
        f"{f', shared A lr {train.shared_a_lr:g}' if train.shared_a_lr else ''} · warm-up {plan.warmup_steps} steps",
    ]
    if plan.merge_steps:
        lines.append(
            f"  ASLoRA: {plan.adapter_config.max_merges} tie(s) per merge group, at steps "
            f"{', '.join(map(str, plan.merge_steps))} of {plan.total_steps}"
        )
    if settings.task.recipe_model and settings.task.recipe_model != settings.model.name:
        lines.append(
            f"  note: task {spec.name}'s training recipe (lr, epochs, max length) is the one published for "
            f"{settings.task.recipe_model}; this run applies it to {settings.model.name}"
        )
    log.info("\n".join(lines))


def _targets(settings: RunSettings) -> str:
    targets = settings.target_modules
    return targets if isinstance(targets, str) else ",".join(targets)


def _load_base(settings: RunSettings, spec: Any) -> tuple[Any, Any]:
    if spec.kind == "causal_lm":
        return load_causal_lm(settings.model)
    return load_classifier(settings.model, spec.num_labels)


def _rebuild(settings: RunSettings, spec: Any, adapter_config: object, state: dict[str, Any]) -> Any:
    """The adapted model with the trained tensors of a sharded run loaded, on this process only."""
    _, model = _load_base(settings, spec)
    model = apply_adapter(model, adapter_config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise RuntimeError(f"the sharded run's final state does not fit the rebuilt model: {sorted(unexpected)[:5]}")
    return model


def _save_best_and_last(model: Any, result: Any, run_dir: Any) -> dict[str, Any] | None:
    """``adapter/``: the adapter as it was at the best validation epoch — the one whose scores the
    report gives, which ``evaluate.py run=…`` reproduces; ``adapter_last/``: as training ended.
    The model is left holding the best epoch's weights. ``None`` where no adapter is saved."""
    last_epoch = result.epochs[-1]["epoch"] if result.epochs else None
    last = _save_trained_adapter(model, run_dir / "adapter_last")
    if last is None:
        return None
    if result.best_state is not None:
        missing, unexpected = model.load_state_dict(result.best_state, strict=False)
        if unexpected:
            raise RuntimeError(f"the best epoch's weights do not fit the model: {sorted(unexpected)[:5]}")
    best = _save_trained_adapter(model, run_dir / "adapter")
    return {"best": {"dir": str(best), "epoch": result.best_epoch}, "last": {"dir": str(last), "epoch": last_epoch}}


def _save_trained_adapter(model: Any, directory: Any) -> Any:
    """The trained adapter, ready for another stack: ours via ``save_adapter`` (load with
    ``aslora.load_adapter``, or ``aslora.export_peft_lora`` it), PEFT's via ``save_pretrained``.
    Full fine-tuning saves nothing here (a whole model per run is not a report artefact)."""
    if find_pool(model) is not None:
        return save_adapter(model, directory, training_state=False)
    if hasattr(model, "peft_config"):
        model.save_pretrained(str(directory))
        return directory
    return None


def _target_shapes(model: Any, target_modules: Any) -> list[tuple[int, int]]:
    probe = SharedLoRAConfig(target_modules=target_modules)
    return [(m.in_features, m.out_features) for _, m in find_targets(model, probe)]
