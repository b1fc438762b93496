"""FSDP2 (``torch.distributed.fsdp.fully_shard``) for a model adapted with a shared pool.

    model = aslora.apply_adapter(model, aslora.ASLoRAConfig(...))
    model = aslora.integrations.fsdp.fully_shard_adapted(model)   # inside torchrun / accelerate launch
    optimizer = torch.optim.AdamW(p for p in model.parameters() if p.requires_grad)

Each transformer block (the classes in ``model._no_split_modules``) becomes its own FSDP unit and
the root module takes the rest — the embeddings, the head and the pools. The pools must sit in the
root unit: every block reads the shared A and the B's of its merge group, and the root's parameters
are gathered for the whole forward and backward, while a block's are gathered only for that block.

Why this works for ASLoRA at all: a tie rewrites the layer→B map (a buffer, not sharded) and
never adds or removes a parameter, so FSDP's sharded parameters stay what they were. The running
means read each B's full value (``DTensor.full_tensor()``, an all-gather of a few kilobytes per
step), a λ > 0 tie blends two B's shard by shard, and every process takes the same decision from
the same values.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def fully_shard_adapted(
    model: nn.Module,
    *,
    block_classes: Iterable[type | str] | None = None,
    mesh: object | None = None,
    reshard_after_forward: bool = True,
) -> nn.Module:
    """Shard ``model`` with FSDP2: one unit per transformer block, the root (with the pool) last.

    Args:
        model: a model adapted with ``aslora.apply_adapter`` (ours or PEFT's), or any model.
        block_classes: the block classes (or class names) to wrap; default: the model's
            ``_no_split_modules`` (transformers' own list, what accelerate's transformer-based
            auto-wrap policy uses).
        mesh: a 1-D device mesh; default: every process of the default process group.
        reshard_after_forward: free each block's gathered parameters after its forward (FSDP2's
            default; ``False`` trades memory for one all-gather less per block).

    Raises:
        RuntimeError: no default process group (run under torchrun or accelerate launch).
        ValueError: no module of the given block classes.
    """
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "FSDP needs a process group: launch with torchrun or accelerate launch "
            "(several processes), e.g. accelerate launch --num_processes 8 train.py train.fsdp=true"
        )
    if mesh is None:
        from torch.distributed.device_mesh import init_device_mesh

        device_type = "cuda" if torch.cuda.is_available() else "cpu"
        mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    names = {
        c if isinstance(c, str) else c.__name__
        for c in (block_classes if block_classes is not None else _no_split_modules(model))
    }
    blocks = [m for m in model.modules() if type(m).__name__ in names]
    if not blocks:
        raise ValueError(f"no module of class {sorted(names)} in {type(model).__name__} to shard as a block")
    for block in blocks:
        fully_shard(block, mesh=mesh, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward)
    return model


def full_state(model: nn.Module, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict with sharded tensors gathered (a collective: call on every process).

    ``keys`` limits it to those entries (e.g. the trainable ones and the pool's buffers)."""
    wanted = None if keys is None else set(keys)
    state = {}
    for key, value in model.state_dict().items():
        if wanted is not None and key not in wanted:
            continue
        if hasattr(value, "full_tensor"):
            value = value.full_tensor()
        state[key] = value.detach().cpu().clone() if torch.is_tensor(value) else value
    return state


def is_sharded(model: nn.Module) -> bool:
    return any(hasattr(p, "full_tensor") for p in model.parameters())


def _no_split_modules(model: nn.Module) -> list[str]:
    for module in model.modules():
        names = getattr(module, "_no_split_modules", None)
        if names:
            return list(names)
    raise ValueError(f"{type(model).__name__} names no _no_split_modules; pass block_classes=")
