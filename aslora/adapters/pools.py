"""The container of every adapter's pool on one model, as a PEFT tuner layer, and how to find it.

    model.shared_lora                       SharedLoRAPools (this module)
        .aslora_pool["default"]             SharedLoRAPool (``pool.py``): one adapter's factors, map, ties
        .aslora_pool["other"]               a second adapter: its own of all of these

Why the pools sit in a tuner layer of their own, on the base model, is told in ``pool.py``.
"""

from __future__ import annotations

from typing import Optional

import torch
from peft.tuners.tuners_utils import BaseTunerLayer, check_adapters_to_merge
from torch import nn

from aslora.adapters.pool import SharedLoRAPool

POOL_ATTRIBUTE = "shared_lora"
"""Where :class:`SharedLoRAPools` sits on the adapted model (``model.shared_lora``)."""
POOL_DICT = "aslora_pool"
"""Its per-adapter dict, and the PEFT prefix of our tuners (``aslora_pools.aslora_pool.<adapter>``)."""
DEFAULT_ADAPTER = "default"


class SharedLoRATunerLayer(BaseTunerLayer):
    """What PEFT's walks over our tuner's layers look for: the adapted linears and the pools'
    container (``aslora.integrations.peft.SharedLoRATuner.tuner_layer_cls``)."""


class SharedLoRAPools(nn.Module, SharedLoRATunerLayer):
    """The pools of every adapter of one model, keyed by adapter name, as a PEFT tuner layer.

    It computes nothing itself (the adapted linears read the pools); being a tuner layer is what
    makes PEFT's generic code see the pools as adapter state: ``set_adapter`` trains the active
    adapter's pool and freezes the others, ``delete_adapter`` drops a pool, ``disable_adapter``
    freezes them, and the state dict of adapter ``x`` is everything under ``aslora_pool.x``.
    """

    adapter_layer_names = (POOL_DICT,)
    in_features = None
    """PEFT's tuner layers expose the shapes they adapt; the pools adapt no module of their own (the
    adapted linears expose theirs), so the container's are ``None``."""
    out_features = None

    def __init__(self, adapter_name: str) -> None:
        super().__init__()
        self.aslora_pool = nn.ModuleDict()
        self._active_adapter = adapter_name
        self._disable_adapters = False
        self.merged_adapters = []

    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        # The adapted linears fold ΔW into their own weights; the container only records which
        # adapters are merged, so PEFT's model status reads the same on every tuner layer.
        self.merged_adapters.extend(n for n in check_adapters_to_merge(self, adapter_names) if n in self.aslora_pool)

    def unmerge(self) -> None:
        self.merged_adapters.clear()

    @property
    def weight(self) -> torch.Tensor:  # BaseTunerLayer's would look for a base layer, which this has not
        raise AttributeError("SharedLoRAPools holds the adapters' factors, no weight of its own")

    @property
    def bias(self) -> torch.Tensor:
        raise AttributeError("SharedLoRAPools holds the adapters' factors, no bias of its own")

    def _move_adapter_to_device_of_base_layer(self, adapter_name: str, device: Optional[torch.device] = None) -> None:
        # PEFT calls this after loading (a low_cpu_mem_usage load assigns the file's tensors, on
        # the CPU): the pool goes back where it was built, beside the weights its layers adapt
        pool = self.aslora_pool[adapter_name] if adapter_name in self.aslora_pool else None
        if pool is not None:
            pool.to(device if device is not None else pool.home_device)

    def extra_repr(self) -> str:
        return f"adapters={list(self.aslora_pool)}"


def find_pools(model: nn.Module) -> SharedLoRAPools | None:
    """The pools' container of ``model`` (or of a wrapper of it: PEFT, DDP, ``torch.compile``)."""
    for module in model.modules():
        if isinstance(module, SharedLoRAPools):
            return module
    return None


def find_pool(model: nn.Module, adapter_name: str | None = None) -> SharedLoRAPool | None:
    """The pool of adapter ``adapter_name``; with ``None``, the model's only pool. ``None`` for
    models without our adapters.

    Raises:
        ValueError: ``adapter_name`` names no adapter of the model, or it is ``None`` and the
            model has several.
    """
    pools = find_pools(model)
    if pools is None or not len(pools.aslora_pool):
        if adapter_name is not None and pools is not None:
            raise ValueError(f"adapter {adapter_name!r} is not on this model; it has none of ours")
        return None
    if adapter_name is None:
        if len(pools.aslora_pool) > 1:
            raise ValueError(
                f"this model has several adapters {list(pools.aslora_pool)}: name the one you mean (adapter_name=...)"
            )
        return next(iter(pools.aslora_pool.values()))
    if adapter_name not in pools.aslora_pool:
        raise ValueError(f"adapter {adapter_name!r} is not on this model; its adapters: {list(pools.aslora_pool)}")
    return pools.aslora_pool[adapter_name]
