"""Surgery: find the target ``nn.Linear`` modules, build the pool, swap in adapted layers.

We inject into stock ``transformers`` models by replacing ``nn.Linear`` children (litgpt's
approach, style.md) rather than subclassing model blocks, so any architecture whose projections
are ``nn.Linear`` works.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig, SharedLoRAConfig, TiedLoRAConfig
from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pool import POOL_ATTRIBUTE, SharedLoRAPool, Slot, find_pool, layer_index

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
) -> list[tuple[str, nn.Linear]]:
    """Every module matching ``config.target_modules``, outside the head; each must be ``nn.Linear``."""
    found: list[tuple[str, nn.Linear]] = []
    for name, module in model.named_modules():
        if not name or not matches_target(name, config.target_modules):
            continue
        if any(name == h or name.startswith(h + ".") for h in exclude):
            continue
        if not isinstance(module, nn.Linear):
            raise ValueError(
                f"target module {name!r} is a {type(module).__name__}, not nn.Linear; "
                f"this adapter only adapts linear layers"
            )
        found.append((name, module))
    if not found:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches no module of {type(model).__name__}; "
            f"linear modules it has: {sorted(_linear_suffixes(model))}"
        )
    return found


def build_slots(targets: list[tuple[str, nn.Linear]], config: SharedLoRAConfig) -> list[Slot]:
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


def inject_shared_lora(model: nn.Module, config: SharedLoRAConfig, head_names: Sequence[str]) -> SharedLoRAPool:
    """Replace every target with a :class:`SharedLoRALinear` and attach the pool to ``model``."""
    if find_pool(model) is not None:
        raise ValueError(f"{type(model).__name__} already carries an adapter pool; apply one adapter per model")
    targets = find_targets(model, config, exclude=head_names)
    slots = build_slots(targets, config)
    weight = targets[0][1].weight
    dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
    pool = SharedLoRAPool(config, slots, device=weight.device, dtype=dtype)
    for slot, (name, module) in zip(slots, targets):
        parent_name, _, child_name = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child_name, SharedLoRALinear(module, pool, slot, config.lora_dropout))
    model.add_module(POOL_ATTRIBUTE, pool)
    return pool


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
