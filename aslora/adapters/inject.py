"""Surgery: find the target ``nn.Linear`` modules, build the pool, swap in adapted layers.

We inject into stock ``transformers`` models by replacing ``nn.Linear`` children (as PEFT and
litgpt do) rather than subclassing model blocks, so any architecture whose projections
are ``nn.Linear`` works.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig, SharedLoRAConfig, TiedLoRAConfig
from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pool import SharedLoRAPool
from aslora.adapters.pools import DEFAULT_ADAPTER, POOL_ATTRIBUTE, SharedLoRAPools, find_pools
from aslora.adapters.slot import Slot, layer_index

DEFAULT_HEAD_MODULES = ("classifier", "score")
"""Task heads that train alongside every adapter (PEFT's ``modules_to_save`` for SEQ_CLS)."""


def matches_target(module_name: str, target_modules: str | Sequence[str]) -> bool:
    """PEFT's rule: a string is a regex over the full name; a list matches by name suffix."""
    if isinstance(target_modules, str):
        return re.fullmatch(target_modules, module_name) is not None
    return any(module_name == t or module_name.endswith("." + t) for t in target_modules)


def find_head_modules(model: nn.Module, head_modules: Iterable[str]) -> list[str]:
    """Names of the modules that form the task head (trained, excluded from the adapter count)."""
    head_modules = list(head_modules)
    if not head_modules:
        return []
    names = [name for name, _ in model.named_modules() if name and matches_target(name, head_modules)]
    # keep only outermost matches (``classifier`` but not ``classifier.dense``)
    return [n for n in names if not any(n != o and n.startswith(o + ".") for o in names)]


def find_targets(
    model: nn.Module, config: SharedLoRAConfig, exclude: Sequence[str] = ()
) -> list[tuple[str, nn.Module]]:
    """Every module matching ``config.target_modules``, outside the head; each must be ``nn.Linear``
    (or one of our adapted layers, which a further adapter joins)."""
    found: list[tuple[str, nn.Module]] = []
    adapted: list[str] = []  # our layers already there: their insides (base_layer) are not targets
    for name, module in model.named_modules():
        if isinstance(module, SharedLoRALinear):
            adapted.append(name)
        elif any(name.startswith(f"{n}.") for n in adapted):
            continue
        if not name or not matches_target(name, config.target_modules):
            continue
        if any(name == h or name.startswith(h + ".") for h in exclude):
            continue
        require_linear(name, module)
        found.append((name, module))
    if not found:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches no module of {type(model).__name__}; "
            f"linear modules it has: {sorted(_linear_suffixes(model))}"
        )
    return found


def build_slots(targets: list[tuple[str, nn.Module]], config: SharedLoRAConfig) -> list[Slot]:
    """One slot per target, with its A key (by ``a_sharing``), its B bank and its initial row.

    A keys: ``global`` gives one A per distinct input width — ``"global"`` when there is only one
    width; ``per_module`` gives one A per module type. Banks are the merge groups: one per module
    type, or (ASLoRA with ``merge_scope="joint"``) one per B shape, so that any two B's that may
    tie live in one bank. Rows: one per layer (ASLoRA, ShareLoRA), or one per bank (Tied-LoRA).
    """
    widths = sorted({module.in_features for _, module in targets})
    depth_by_type: dict[str, int] = {}
    rows_by_bank: dict[str, int] = {}
    slots = []
    for index, (name, module) in enumerate(targets):
        module_type = name.rsplit(".", 1)[-1]
        depth = depth_by_type.get(module_type, 0)
        depth_by_type[module_type] = depth + 1
        if config.a_sharing == "global":
            a_key = "global" if len(widths) == 1 else f"global_in{module.in_features}"
        else:
            a_key = module_type
        if isinstance(config, ASLoRAConfig) and config.merge_scope == "joint":
            bank = f"shape_{module.out_features}x{config.r}"
        else:
            bank = module_type
        if isinstance(config, TiedLoRAConfig):
            row = 0
        else:
            row = rows_by_bank.get(bank, 0)
            rows_by_bank[bank] = row + 1
        slots.append(
            Slot(
                module_name=name,
                module_type=module_type,
                depth=depth,
                layer=layer_index(name, depth),
                in_features=module.in_features,
                out_features=module.out_features,
                a_key=a_key,
                bank=bank,
                index=index,
                row=row,
            )
        )
    _check_module_types_have_one_shape(slots, config)
    return slots


def resolve_targets(config: SharedLoRAConfig, model: nn.Module) -> SharedLoRAConfig:
    """``config`` with ``target_modules=None`` replaced by PEFT LoRA's default for ``model``'s
    architecture (``peft.utils.constants.TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING``),
    as PEFT's LoRA does; a config that names its targets is returned as it is.

    Raises:
        ValueError: ``target_modules=None`` on a model whose architecture PEFT has no default for.
    """
    if config.target_modules is not None:
        return config
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in DEFAULTS:
        raise ValueError(
            f"target_modules=None takes PEFT's default for the model's architecture, and PEFT has none for "
            f"model_type={model_type!r}: name the modules to adapt, e.g. target_modules=['q_proj', 'v_proj']"
        )
    config.target_modules = tuple(DEFAULTS[model_type])
    return config


def inject_shared_lora(
    model: nn.Module,
    config: SharedLoRAConfig,
    head_names: Sequence[str],
    adapter_name: str = DEFAULT_ADAPTER,
) -> SharedLoRAPool:
    """Add adapter ``adapter_name``: its pool, and every target wrapped in (or, when a previous
    adapter wrapped it already, joined to) a :class:`SharedLoRALinear`."""
    config = resolve_targets(config, model)
    targets = find_targets(model, config, exclude=head_names)
    pool = create_pool(model, config, adapter_name, targets)
    pools = find_pools(model)
    for name, module in targets:
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        adapt_layer(pools, adapter_name, pool.slot_of_module[name], module, parent, child_name)
    return pool


def create_pool(
    model: nn.Module,
    config: SharedLoRAConfig,
    adapter_name: str,
    targets: list[tuple[str, nn.Module]],
    dtype: torch.dtype | None = None,
) -> SharedLoRAPool:
    """Build adapter ``adapter_name``'s pool for ``targets`` and add it to the model's pools
    (created, as ``model.shared_lora``, with the first adapter). Checks before it changes anything.

    ``dtype``: the factors' dtype; ``None``, float32 (float64 for a float64 model) whatever the
    base model's precision — low-precision factors lose the small updates they receive. (Under
    PEFT the base dtype is given and PEFT's ``autocast_adapter_dtype`` upcasts, as for LoRA.)"""
    pools = find_pools(model)
    if pools is not None and adapter_name in pools.aslora_pool:
        raise ValueError(f"{type(model).__name__} already has an adapter named {adapter_name!r}")
    slots = build_slots(targets, config)
    weight = base_linear(targets[0][1]).weight
    if dtype is None:
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    # real storage even under PEFT's low_cpu_mem_usage (its meta-device init): the pool is small,
    # and a B that a loaded adapter does not hold (a retired one) must still be a real tensor
    device = torch.device("cpu") if weight.is_meta else weight.device
    pool = SharedLoRAPool(config, slots, device=device, dtype=dtype)
    if pools is None:
        pools = SharedLoRAPools(adapter_name)
        model.add_module(POOL_ATTRIBUTE, pools)
    pools.aslora_pool[adapter_name] = pool
    return pool


def adapt_layer(
    pools: SharedLoRAPools, adapter_name: str, slot: Slot, target: nn.Module, parent: nn.Module, child_name: str
) -> SharedLoRALinear:
    """Make ``target`` (``parent.<child_name>``) take part in adapter ``adapter_name`` at ``slot``."""
    dropout = pools.aslora_pool[adapter_name].config.lora_dropout
    if isinstance(target, SharedLoRALinear):  # a previous adapter wrapped it
        target.update_layer(adapter_name, slot, dropout)
        return target
    layer = SharedLoRALinear(target, pools, adapter_name, slot, dropout)
    setattr(parent, child_name, layer)
    return layer


def require_linear(name: str, module: nn.Module) -> None:
    """Refuse a target that is not ``nn.Linear`` (or our adapted layer, which a further adapter joins)."""
    if not isinstance(module, (nn.Linear, SharedLoRALinear)):
        raise ValueError(
            f"target module {name!r} is a {type(module).__name__}, not nn.Linear; this adapter only adapts linear layers"
        )


def base_linear(module: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` a target is, or the one our adapted layer wraps."""
    return module.get_base_layer() if isinstance(module, SharedLoRALinear) else module


def _linear_suffixes(model: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def _check_module_types_have_one_shape(slots: list[Slot], config: SharedLoRAConfig) -> None:
    shapes: dict[str, set[tuple[int, int]]] = {}
    for slot in slots:
        shapes.setdefault(slot.module_type, set()).add((slot.in_features, slot.out_features))
    mixed = {t: sorted(s) for t, s in shapes.items() if len(s) > 1}
    if mixed:
        raise ValueError(
            f"module types with several shapes cannot share factors: {mixed}; "
            f"target them with a regex that separates them"
        )
