"""The optimizer's parameter groups (the head and a shared A may have their own lr) and
activation checkpointing of the base model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import get_linear_schedule_with_warmup

from aslora.adapters.dispatch import head_module_names, is_head_parameter
from aslora.adapters.pools import find_pool
from aslora.adapters.registry import SHARED_A
from aslora.harness.runs.train_settings import TrainSettings


def param_groups(model: nn.Module, settings: TrainSettings) -> list[dict[str, Any]]:
    heads = head_module_names(model)
    pool = find_pool(model)
    shared_a = {id(p) for p in pool.lora_A.values()} if pool is not None and settings.shared_a_lr is not None else set()
    head, body, a = [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (a if id(p) in shared_a else head if is_head_parameter(name, heads) else body).append(p)
    if settings.shared_a_lr is not None and pool is None:
        raise ValueError(
            f"train.shared_a_lr is for adapters with a shared A ({', '.join(SHARED_A)}); "
            "this model has none: set train.shared_a_lr=null"
        )
    groups = [{"params": body}]
    if head:
        groups.append({"params": head, "lr": settings.head_lr or settings.lr})
    if a:  # after the others: with shared_a_lr unset the groups (and the optimizer state's order) are as before
        groups.append({"params": a, "lr": settings.shared_a_lr})
    return [g for g in groups if g["params"]]


def build_optimization(
    model: nn.Module, settings: TrainSettings, warmup_steps: int, total_steps: int
) -> tuple[Any, Any]:
    """AdamW over :func:`param_groups` and its linear warm-up/decay schedule: what a run trains with,
    and what a checkpoint's optimizer and scheduler state are checked against on resume."""

    optimizer = torch.optim.AdamW(param_groups(model, settings), lr=settings.lr, weight_decay=settings.weight_decay)
    return optimizer, get_linear_schedule_with_warmup(
        optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """transformers' activation checkpointing on the (possibly PEFT-wrapped) base model, with the
    input embeddings' output requiring grad so reentrant checkpointing also reaches the adapter."""
    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(target, "supports_gradient_checkpointing", False):
        raise ValueError(f"train.gradient_checkpointing=true: {type(target).__name__} does not support it")
    target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    target.enable_input_require_grads()
