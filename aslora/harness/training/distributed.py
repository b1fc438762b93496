"""What the loop does differently under several processes: FSDP2 sharding, and the checks that
keep every process on the same branch and the same weights (DDP, FSDP2; one process: no-ops)."""

from __future__ import annotations

import hashlib
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


def shard(model: nn.Module, accelerator: Any, checkpoint_every_steps: int | None) -> nn.Module:
    from aslora.integrations.fsdp import fully_shard_adapted

    if accelerator.num_processes < 2:
        raise ValueError(
            "train.fsdp=true shards over several processes; this run has one "
            "(launch with accelerate launch --num_processes N, or torchrun)"
        )
    if checkpoint_every_steps:
        raise ValueError(
            "train.fsdp=true with checkpoint.every_steps: sharded checkpoints are not supported yet; "
            "use DDP (train.fsdp=false) for resumable runs"
        )
    return fully_shard_adapted(model)


def any_process(accelerator: Any, flag: torch.Tensor) -> bool:
    """One host sync per step, and every process takes the same branch (else DDP would hang)."""
    flag = flag.float().reshape(1)
    if accelerator.num_processes > 1:
        flag = accelerator.reduce(flag, reduction="sum")
    return bool(flag.item() > 0)


def assert_same_on_every_process(accelerator: Any, decision: list, step: int) -> None:
    if accelerator.num_processes == 1:
        return

    decisions = [None] * accelerator.num_processes
    dist.all_gather_object(decisions, decision)
    if any(d != decisions[0] for d in decisions):
        raise RuntimeError(f"ASLoRA merge decisions differ across processes at step {step}: {decisions}")


def assert_parameters_agree(accelerator: Any, model: nn.Module) -> None:
    """Data-parallel processes must end with bit-identical trainable weights (the merges included)."""
    if accelerator.num_processes == 1:
        return

    digest = hashlib.sha256()
    for name, p in model.named_parameters():
        if p.requires_grad:
            digest.update(name.encode())
            digest.update(p.detach().cpu().contiguous().numpy().tobytes())
    digests = [None] * accelerator.num_processes
    dist.all_gather_object(digests, digest.hexdigest())
    if len(set(digests)) != 1:
        raise RuntimeError(f"trainable weights differ across processes at the end of training: {digests}")
