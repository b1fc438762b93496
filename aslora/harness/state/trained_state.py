"""What a checkpoint and a best-epoch snapshot hold of the model — the trainable tensors and the
whole ASLoRA pool (its buffers too: running means, layer→B map, merge log, mean count) — and
restoring them whole: checked entirely before anything is copied, so a state that does not fit
leaves the model as it was."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aslora.adapters.pools import find_pool


def trainable_state_keys(model: nn.Module) -> set[str]:
    """Trainable parameters and the whole pool (its buffers too: running means, layer→B map,
    merge log, mean count) — what a checkpoint or an FSDP run's final state must hold."""
    keys = {name for name, p in model.named_parameters() if p.requires_grad}
    pool = find_pool(model)
    pool_prefix = next((f"{n}." for n, m in model.named_modules() if m is pool), None)
    if pool_prefix is not None:
        keys |= {k for k in model.state_dict() if k.startswith(pool_prefix)}
    return keys


def trainable_state(model: nn.Module) -> dict[str, Any]:
    keys = trainable_state_keys(model)
    return {k: v.detach().clone() if torch.is_tensor(v) else v for k, v in model.state_dict().items() if k in keys}


def check_model_state(model: nn.Module, saved: Any, source: str = "checkpoint") -> None:
    """``saved`` holds exactly what :func:`trainable_state` of ``model`` holds — no key missing (a
    checkpoint without the shared A or the head would resume another adapter), none extra, every
    value a tensor of the model's shape and dtype, every float finite. Raises ``ValueError`` naming
    ``source`` and the keys."""
    if not isinstance(saved, dict):
        raise ValueError(f"{source}: the model state is not a mapping of tensors")
    own, expected = model.state_dict(), trainable_state_keys(model)
    missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit this model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    wrong = [
        f"{k} {tuple(v.shape) if torch.is_tensor(v) else type(v).__name__} (model: {tuple(own[k].shape)})"
        for k, v in saved.items()
        if not torch.is_tensor(v) or v.shape != own[k].shape or v.dtype != own[k].dtype
    ]
    if wrong:
        raise ValueError(f"{source} does not fit this model: shape or dtype differs for {wrong[:3]}")
    bad = [k for k, v in saved.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(f"{source} holds non-finite values in {bad[:3]}: refusing to resume from it")


def restore_model(model: nn.Module, state: dict[str, Any], source: str = "checkpoint") -> None:
    # fixed keys: the layer→B map and the merge log are buffers, loaded like any tensor. Checked
    # whole before anything is copied, so a checkpoint that does not fit leaves the model untouched.
    check_model_state(model, state["model"], source)
    model.load_state_dict(state["model"], strict=False)
