"""Evaluate a saved adapter: the base model + the adapter a run saved, on the task's held-out splits.

``evaluate.py`` is its command line. Works for every adapter a run saves: ours (``aslora_config.json``,
or a version-1 directory) and PEFT's (``adapter_config.json`` with a ``peft_type``: LoRA, VeRA, or
ours through ``get_peft_model``). The data is prepared exactly as the run prepared it (same task
settings: length, subsample, split seed), so the scores of a run's final weights are reproduced.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import torch
from accelerate import Accelerator
from transformers import DataCollatorForSeq2Seq, DataCollatorWithPadding

from aslora.harness.runs.report import load_report
from aslora.harness.runs.run_dir import check_no_links, write_text_atomic

log = logging.getLogger("aslora")
EVAL_FILE = "eval.json"
ADAPTER_DIRS = {"best": "adapter", "last": "adapter_last"}  # what a run saves (aslora/harness/runs/run.py)


def load_trained(base: Any, adapter_dir: str | Path) -> Any:
    """``base`` with the saved adapter in ``adapter_dir`` applied, in eval mode."""
    adapter_dir = Path(adapter_dir)
    if (adapter_dir / "aslora_config.json").is_file():
        import aslora

        return aslora.load_adapter(base, adapter_dir).eval()
    peft_file = adapter_dir / "adapter_config.json"
    if peft_file.is_file():
        from aslora.adapter_check import read_json, read_weights

        meta = read_json(peft_file)
        if isinstance(meta, dict) and meta.get("format") == "aslora-adapter":  # version 1 of ours, under PEFT's name
            import aslora

            return aslora.load_adapter(base, adapter_dir).eval()
        if isinstance(meta, dict) and "peft_type" in meta:
            import peft

            import aslora  # noqa: F401  (registers our PEFT types, for adapters saved through get_peft_model)

            weights = adapter_dir / "adapter_model.safetensors"
            if not weights.is_file():  # PEFT would fall back to adapter_model.bin, a pickle
                raise ValueError(
                    f"{weights} does not exist (a PEFT adapter saved as adapter_model.bin is a pickle, "
                    f"which we do not load: re-save it with safe_serialization=True)"
                )
            read_weights(weights)  # readable, floating point, finite: before PEFT touches the model
            return peft.PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    raise ValueError(
        f"{adapter_dir} holds no saved adapter (neither aslora_config.json nor a PEFT adapter_config.json)"
    )


def evaluate_saved(
    *,
    run: str | None = None,
    adapter_dir: str | None = None,
    task: str | dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    hub: bool = False,
    texts: Sequence[str] = (),
    prompts: Sequence[str] = (),
    out: str | None = None,
    max_eval_examples: int | None = None,
    epoch: str = "best",
) -> dict[str, Any]:
    """Scores (and predictions for ``texts`` / ``prompts``) of a saved adapter; writes ``eval.json``.

    Either ``run`` (an ``experiments/<run_name>`` directory: its report says model, task and task
    settings, its ``adapter/`` holds the weights; ``task``, a name, scores it on another task) or
    ``adapter_dir`` with ``task`` and ``model``, each a config group's resolved settings (a
    ``model`` section's fields, a ``task`` section's ``name`` and ``max_length``): ``evaluate.py``
    reads them from the configs (``hydra_glue.group_config``); the library reads no config file.

    ``max_eval_examples`` scores the first N of each held-out split's fixed shuffle (a quick look);
    by default a run's own setting, or the whole split.

    ``epoch`` (with ``run``): ``best`` scores ``adapter/``, the adapter of the best validation epoch,
    and reproduces the report's ``best`` scores exactly; ``last`` scores ``adapter_last/``, the
    weights training ended with. (Runs made before the two were kept saved only the last epoch's
    adapter, as ``adapter/``: both choices read it, and the result says which epoch it is.)

    Raises:
        ValueError: neither or both ways given, a run that saved no adapter (full fine-tuning), an
            unknown task or model, or data/weights that cannot be had here.
    """
    from aslora.harness.inputs.data import check_task_available, get_task
    from aslora.harness.inputs.models import ModelSpec, check_model_available, split_model_config
    from aslora.harness.runs.settings import RunSettings, TaskSettings

    if (run is None) == (adapter_dir is None):
        raise ValueError("give run=experiments/<run_name>, or adapter_dir=<dir> with task=<name> and model=<name>")
    _check_inputs("texts", texts, max_chars=None)  # classification truncates a long text to the task's length
    _check_inputs("prompts", prompts, max_chars=MAX_PROMPT_CHARS)
    if run is not None:
        check_no_links(Path(run))  # eval.json goes into the run's directory: it must follow no link
        report_path = Path(run) / "report.json"
        if not report_path.is_file():
            raise ValueError(f"run={run!r}: {report_path} not found (a finished run's directory holds report.json)")
        report = load_report(report_path)
        settings = RunSettings.from_dict(report["config"])
        if epoch not in ADAPTER_DIRS:
            raise ValueError(f"epoch={epoch!r} must be one of {sorted(ADAPTER_DIRS)}")
        saved = report.get("adapters")
        if saved is None:  # an older run: adapter/ holds the last epoch's weights
            adapter_dir, adapter_epoch = str(Path(run) / "adapter"), (report.get("epochs") or [{}])[-1].get("epoch")
        else:
            adapter_dir, adapter_epoch = str(Path(run) / ADAPTER_DIRS[epoch]), saved[epoch]["epoch"]
        if not Path(adapter_dir).is_dir():
            raise ValueError(
                f"run={run!r} (adapter={report['adapter']}) saved no adapter to evaluate "
                f"(full fine-tuning runs do not save their weights)"
            )
        model_spec, task_settings = settings.model, settings.task
        if task is not None and task != task_settings.name:
            if not isinstance(task, str):
                raise ValueError(f"task= with run= is a task's name; got {task!r}")
            task_settings = TaskSettings(name=task, max_length=task_settings.max_length)
        out = out or str(Path(run) / EVAL_FILE)
    else:
        if not isinstance(task, dict) or not isinstance(model, dict):
            raise ValueError(
                "adapter_dir= needs task=<name> and model=<name> (configs/task/<name>.yaml, configs/model/<name>.yaml)"
            )
        model_spec = ModelSpec(**split_model_config(model)[0])
        task_settings = TaskSettings(name=task["name"], max_length=task["max_length"])
        out = out or str(Path(adapter_dir) / EVAL_FILE)
        adapter_epoch = None
    if Path(out).is_symlink():
        raise ValueError(f"out={out!r} is a symbolic link: eval.json is written in place of a link, never through one")
    if max_eval_examples is not None:
        task_settings = dataclasses.replace(task_settings, max_eval_examples=max_eval_examples)
    spec = get_task(task_settings.name)
    check_task_available(spec, hub_enabled=hub, local_dir=task_settings.local_dir)
    check_model_available(model_spec, hub_enabled=hub)

    trained, tokenizer = _load(model_spec, spec, adapter_dir)
    scores = _scores(trained, tokenizer, spec, task_settings)
    result: dict[str, Any] = {
        "run": run,
        "adapter_dir": str(adapter_dir),
        "adapter_epoch": adapter_epoch,
        "model": model_spec.name,
        "task": spec.name,
        "task_standin_for": spec.standin_for,
        "main_metric": spec.metrics[0],
        **scores,
    }
    if texts:
        result["predictions"] = predict_classes(trained, tokenizer, spec, list(texts), task_settings.max_length)
    if prompts:
        from aslora.harness.inputs.instruct import generate_samples

        result["generations"] = generate_samples(trained, tokenizer, [(p, "") for p in prompts])
    write_text_atomic(Path(out), json.dumps(result, indent=2))
    result["eval_file"] = out
    return result


MAX_INPUTS = 1000
MAX_PROMPT_CHARS = 20_000
"""A prompt is generated from whole (no truncation can keep its meaning); longer ones are refused."""


def _check_inputs(name: str, values: Any, max_chars: int | None) -> None:
    """``texts=`` / ``prompts=``: a list of at most ``MAX_INPUTS`` non-empty strings — checked
    before any model loads, so a bad request costs nothing."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{name}= must be a list of strings, e.g. {name}='[\"a moving film\"]'; got {values!r}"[:300])
    if len(values) > MAX_INPUTS:
        raise ValueError(f"{name}= has {len(values):,} entries; at most {MAX_INPUTS:,} at a time")
    for i, value in enumerate(values):
        if not isinstance(value, str):
            raise ValueError(f"{name}[{i}]={value!r} is not a string")
        if not value.strip():
            raise ValueError(f"{name}[{i}] is empty")
        if max_chars is not None and len(value) > max_chars:
            raise ValueError(f"{name}[{i}] has {len(value):,} characters; at most {max_chars:,}")


def predict_classes(model: Any, tokenizer: Any, spec: Any, texts: list[str], max_length: int) -> list[dict[str, Any]]:
    """Class (or score, for regression) and class probabilities of each text."""

    if spec.kind != "classify":
        raise ValueError(f"texts= are for classification tasks; task {spec.name!r} generates: give prompts=")
    if len(spec.text_fields) != 1:
        raise ValueError(
            f"task {spec.name!r} classifies pairs ({', '.join(spec.text_fields)}); texts= takes single "
            f"texts, for single-sentence tasks"
        )
    with torch.no_grad():
        inputs = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        logits = model(**inputs).logits
    if spec.is_regression:
        return [{"text": t, "score": float(v)} for t, v in zip(texts, logits.squeeze(-1), strict=True)]
    probabilities = logits.softmax(-1)
    return [
        {"text": t, "label": int(p.argmax()), "probabilities": [round(float(x), 6) for x in p]}
        for t, p in zip(texts, probabilities, strict=True)
    ]


def _load(model_spec: Any, spec: Any, adapter_dir: str) -> tuple[Any, Any]:
    from aslora.harness.inputs.models import load_causal_lm, load_classifier

    tokenizer, base = (
        load_causal_lm(model_spec) if spec.kind == "causal_lm" else load_classifier(model_spec, spec.num_labels)
    )
    return load_trained(base, adapter_dir), tokenizer


def _scores(model: Any, tokenizer: Any, spec: Any, task: Any) -> dict[str, Any]:

    from aslora.harness.inputs.data import load_task
    from aslora.harness.inputs.instruct import IGNORE_INDEX
    from aslora.harness.training.batching import evaluation_loader
    from aslora.harness.training.scoring import evaluate

    data = load_task(
        spec,
        tokenizer,
        max_length=task.max_length,
        max_train_examples=task.max_train_examples,
        max_eval_examples=task.max_eval_examples,
        split_seed=task.split_seed,
        local_dir=task.local_dir,
    )
    collate = (
        DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
        if spec.kind == "causal_lm"
        else DataCollatorWithPadding(tokenizer)
    )
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    model = accelerator.prepare_model(model, evaluation_mode=True)
    scores = {}
    for split, dataset in (("validation", data.validation), ("test", data.test)):
        if dataset is None:
            continue
        loader = accelerator.prepare_data_loader(evaluation_loader(dataset, 64, collate))
        scores[split] = evaluate(model, loader, data, accelerator)
        scores[f"{split}_examples"] = len(dataset)
    return scores


def format_summary(result: dict[str, Any]) -> str:
    epoch = f" (epoch {result['adapter_epoch']})" if result.get("adapter_epoch") is not None else ""
    lines = [f"{result['model']} + adapter {result['adapter_dir']}{epoch} on {result['task']}"]
    for split in ("validation", "test"):
        if split in result:
            scores = ", ".join(
                f"{k} {v:.4f}" if isinstance(v, float) and math.isfinite(v) else f"{k} {v}"
                for k, v in result[split].items()
            )
            lines.append(f"  {split} ({result[f'{split}_examples']} examples): {scores}")
    for p in result.get("predictions", []):
        verdict = (
            f"label {p['label']} (p={p['probabilities'][p['label']]:.3f})"
            if "label" in p
            else f"score {p['score']:.3f}"
        )
        lines.append(f"  {verdict}  {p['text']}")
    for g in result.get("generations", []):
        lines.append(f"  > {g['prompt']}\n    {g['generated']}")
    lines.append(f"wrote {result['eval_file']}")
    return "\n".join(lines)
