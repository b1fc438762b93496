"""The training loop: explicit, with its surgery visible (torchtune's "no training framework").

AdamW, linear warm-up then linear decay, gradient clipping, evaluation after each epoch with
best-epoch tracking, dynamic padding. ASLoRA's merge controller runs after every optimizer step;
when it ties two B's it removes the retired one from the optimizer right there, in the loop.
Built on ``accelerate``, so the same loop runs on one CPU, one GPU or several processes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.dispatch import head_module_names, is_head_parameter
from aslora.adapters.merging import MergeController
from aslora.adapters.pool import find_pool
from aslora.data import TaskData
from aslora.metrics import compute_metrics
from aslora.params import count_parameters


@dataclass(frozen=True)
class TrainSettings:
    lr: float
    epochs: int
    batch_size: int
    eval_batch_size: int = 64
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float | None = 1.0
    head_lr: float | None = None
    """A separate learning rate for the task head (VeRA's recipe); ``None``: same as ``lr``."""
    seed: int = 0
    mixed_precision: str = "no"
    progress_bar: bool = True

    def __post_init__(self) -> None:
        problems = []
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            problems.append(f"train.lr={self.lr!r} must be a positive number")
        if self.head_lr is not None and not (isinstance(self.head_lr, (int, float)) and self.head_lr > 0):
            problems.append(f"train.head_lr={self.head_lr!r} must be a positive number or null")
        for name in ("epochs", "batch_size", "eval_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                problems.append(f"train.{name}={value!r} must be a positive integer")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            problems.append(f"train.weight_decay={self.weight_decay!r} must be >= 0")
        if not (isinstance(self.warmup_ratio, (int, float)) and 0 <= self.warmup_ratio < 1):
            problems.append(f"train.warmup_ratio={self.warmup_ratio!r} must be in [0, 1)")
        if self.max_grad_norm is not None and not (isinstance(self.max_grad_norm, (int, float)) and self.max_grad_norm > 0):
            problems.append(f"train.max_grad_norm={self.max_grad_norm!r} must be positive or null")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            problems.append(f"train.mixed_precision={self.mixed_precision!r} must be one of ['no', 'bf16', 'fp16']")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass
class FitResult:
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_metric: float | None = None
    best_validation: dict[str, float] = field(default_factory=dict)
    test_at_best: dict[str, float] | None = None
    total_steps: int = 0
    params_before: dict[str, Any] = field(default_factory=dict)
    params_after: dict[str, Any] = field(default_factory=dict)
    merge_history: list[dict[str, Any]] = field(default_factory=list)
    train_seconds: float = 0.0


Logger = Callable[[dict[str, float], int], None]


def steps_per_epoch(num_examples: int, batch_size: int, num_processes: int = 1) -> int:
    return math.ceil(math.ceil(num_examples / num_processes) / batch_size)


def fit(model: nn.Module, data: TaskData, collate: Callable, settings: TrainSettings,
        log: Logger | None = None) -> FitResult:
    """Train ``model`` (already adapted) on ``data.train``; evaluate each epoch on validation
    (and test, where the task has labelled test data); return the per-epoch record.

    The best epoch is chosen on the validation main metric; the test score reported is the one
    at that epoch, so the held-out number is never selected on.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    log = log or (lambda metrics, step: None)
    accelerator = Accelerator(mixed_precision=settings.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    train_loader = torch.utils.data.DataLoader(
        data.train, batch_size=settings.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    eval_loaders = {"val": data.validation} | ({"test": data.test} if data.test is not None else {})
    eval_loaders = {k: torch.utils.data.DataLoader(v, batch_size=settings.eval_batch_size, collate_fn=collate)
                    for k, v in eval_loaders.items()}

    total_steps = settings.epochs * steps_per_epoch(len(data.train), settings.batch_size, accelerator.num_processes)
    pool = find_pool(model)
    # built before the first step: an impossible merge schedule fails here, not mid-run
    controller = MergeController(model, total_steps) if pool is not None and isinstance(pool.config, ASLoRAConfig) else None
    result = FitResult(total_steps=total_steps, params_before=count_parameters(model).as_dict())

    optimizer = torch.optim.AdamW(_param_groups(model, settings), lr=settings.lr, weight_decay=settings.weight_decay)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=math.ceil(settings.warmup_ratio * total_steps), num_training_steps=total_steps)
    model, optimizer, train_loader, scheduler = accelerator.prepare(model, optimizer, train_loader, scheduler)
    eval_loaders = {k: accelerator.prepare(v) for k, v in eval_loaders.items()}

    from tqdm.auto import tqdm

    progress = tqdm(total=total_steps, desc="train", disable=not (settings.progress_bar and accelerator.is_main_process))
    step, started = 0, time.perf_counter()
    for epoch in range(1, settings.epochs + 1):
        model.train()
        losses = []
        for batch in train_loader:
            loss = model(**batch).loss
            accelerator.backward(loss)
            if settings.max_grad_norm is not None:
                accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            losses.append(loss.detach())
            if controller is not None:
                for event in controller.step(step, optimizer):
                    log({"aslora/num_B": controller.num_distinct_B, "aslora/merge_distance": event.distance}, step)
            if step % 10 == 0 or step == total_steps:
                loss_value = loss.item()
                progress.set_postfix(loss=f"{loss_value:.4f}")
                log({"train/loss": loss_value, "train/lr": scheduler.get_last_lr()[0]}, step)
            progress.update(1)
        record = {"epoch": epoch, "step": step, "train_loss": float(torch.stack(losses).mean())}
        for split, loader in eval_loaders.items():
            record[split] = evaluate(model, loader, data, accelerator)
            log({f"{split}/{k}": v for k, v in record[split].items()}, step)
        if controller is not None:
            record["num_distinct_B"] = controller.num_distinct_B
        result.epochs.append(record)
        main = record["val"][data.spec.metrics[0]]
        if result.best_metric is None or main > result.best_metric:
            result.best_epoch, result.best_metric, result.best_validation = epoch, main, record["val"]
            result.test_at_best = record.get("test")
    progress.close()
    result.train_seconds = time.perf_counter() - started
    unwrapped = accelerator.unwrap_model(model)
    result.params_after = count_parameters(unwrapped).as_dict()
    result.merge_history = list(pool.merge_history) if pool is not None else []
    return result


@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, data: TaskData, accelerator: Any) -> dict[str, float]:
    model.eval()
    predictions, labels = [], []
    for batch in loader:
        logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
        logits, batch_labels = accelerator.gather_for_metrics((logits, batch["labels"]))
        predictions.append(logits.squeeze(-1) if data.spec.is_regression else logits.argmax(-1))
        labels.append(batch_labels)
    p = torch.cat(predictions).float().cpu().numpy()
    y = torch.cat(labels).float().cpu().numpy()
    if not data.spec.is_regression:
        p, y = p.astype(np.int64), y.astype(np.int64)
    return compute_metrics(data.spec.metrics, p, y)


def _param_groups(model: nn.Module, settings: TrainSettings) -> list[dict[str, Any]]:
    heads = head_module_names(model)
    head, body = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (head if is_head_parameter(name, heads) else body).append(p)
    groups = [{"params": body}]
    if head:
        groups.append({"params": head, "lr": settings.head_lr or settings.lr})
    return [g for g in groups if g["params"]]
