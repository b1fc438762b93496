"""Fold the adapter into the frozen weights: ``W ← W + ΔW``, leaving a plain model.

After folding, inference costs exactly what the base model costs (no adapter code runs). The
addition happens in float32 (then casts back), because adding a small ``ΔW`` to bf16/fp16
weights in their own precision rounds much of it away; a non-finite result is refused rather
than written (PEFT's ``safe_merge``).
"""

from __future__ import annotations

import torch
from torch import nn

from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pools import POOL_ATTRIBUTE, find_pools


@torch.no_grad()
def merge_into_base(model: nn.Module) -> nn.Module:
    """Return ``model`` with every adapter folded into its base weights and removed.

    Our adapters are folded in place; a PEFT model (PEFT's own methods, or ours through
    ``peft.get_peft_model``) is unwrapped with ``merge_and_unload(safe_merge=True)``; a model
    without adapter is returned as is.

    Raises:
        ValueError: a folded weight would contain NaN or Inf (the model is left unchanged).
    """
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        return model.merge_and_unload(safe_merge=True)
    return _replace_adapted_layers(model, fold=True)


@torch.no_grad()
def remove_adapter(model: nn.Module) -> nn.Module:
    """Return ``model`` with our adapted layers replaced by their untouched base layers and the
    pool removed: the base model as it was before ``apply_adapter``."""
    return _replace_adapted_layers(model, fold=False)


def _replace_adapted_layers(model: nn.Module, *, fold: bool) -> nn.Module:
    pools = find_pools(model)
    if pools is None:
        return model
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, SharedLoRALinear)]
    folded = {}
    for name, layer in layers if fold else []:  # compute everything first, so a failure changes nothing
        weight = layer.get_base_layer().weight
        new_weight = weight.float()
        for adapter_name in layer.slot:  # every adapter the layer takes part in (not those PEFT merged already)
            if adapter_name not in layer.merged_adapters:
                new_weight = new_weight + layer.delta_weight(adapter_name).to(weight.device)
        if not torch.isfinite(new_weight).all():
            raise ValueError(f"folding the adapter into {name} gives non-finite weights; model left unchanged")
        folded[name] = new_weight.to(weight.dtype)
    for name, layer in layers:
        if not fold:
            layer.unmerge()  # the base weights as they were
        else:
            layer.get_base_layer().weight.copy_(folded[name])
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, layer.get_base_layer())
    owner = next(m for m in model.modules() if m._modules.get(POOL_ATTRIBUTE) is pools)
    del owner._modules[POOL_ATTRIBUTE]
    return model
