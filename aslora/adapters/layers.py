"""The adapted linear layer: a frozen ``nn.Linear`` plus low-rank updates drawn from the pools.

    h = W x + Σ_{active adapters}  (α / r) · B_{g(i)} · A_{a(i)} · dropout(x)             (LoRA Eq. 3; ASLoRA §3.1)
    h = W x + Σ_{active adapters}  (α / r) · diag(v_i) · B · diag(u_i) · A · dropout(x)  (Tied-LoRA, vBuA)

The layer owns no adapter tensor: it holds a reference to the model-level pools and, for each
adapter it takes part in, its slot there; it reads its B through the pool's ``b_map`` on every
call, so a tie (a write into ``b_map``) takes effect at the next forward with no surgery on the
layer, the optimizer or a compiled graph.

It is a PEFT ``BaseTunerLayer`` (as VeRA's layers are), keyed by adapter name, so PEFT's
``merge_adapter``/``unmerge_adapter``, ``disable_adapter``, ``set_adapter``, ``delete_adapter``,
``get_layer_status`` and ``merge_and_unload`` work on it as on LoRA's.

The forward is a pure function of ``x`` and the pools' tensors — no cache, no Python state read
from tensor values — which is what makes it safe under activation checkpointing (the recomputed
forward saves exactly what the first one did), ``torch.compile`` (no graph break, no guard on the
map's values) and ``torch.no_grad`` generation.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from peft.tuners.tuners_utils import check_adapters_to_merge
from torch import nn
from torch.nn import functional as F

from aslora.adapters.pool import SharedLoRAPool
from aslora.adapters.pools import DEFAULT_ADAPTER, SharedLoRAPools, SharedLoRATunerLayer
from aslora.adapters.slot import Slot


class SharedLoRALinear(nn.Module, SharedLoRATunerLayer):
    """``nn.Linear`` wrapper whose updates use the pools' shared A's and (possibly tied) B's.

    Args:
        base_layer: the frozen pretrained projection ``W`` (kept as ``self.base_layer``, so the
            state-dict key of ``W`` gains the PEFT-style ``.base_layer`` infix).
        pools: the model-level pools; referenced, not registered, so shared tensors are stored once.
        adapter_name, slot, dropout: the first adapter this layer takes part in (see :meth:`update_layer`).
    """

    # PEFT's per-adapter containers of this layer: the tensors live in the pools, so the dropouts
    # are what carries the adapter names PEFT lists and deletes; slot and scaling are plain dicts
    adapter_layer_names = ("lora_dropout",)
    other_param_names = ("slot", "scaling")

    def __init__(self, base_layer: nn.Linear, pools: SharedLoRAPools, adapter_name: str, slot: Slot, dropout: float):
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["pools"] = pools  # a plain reference: nn.Module would otherwise register it here too
        self.lora_dropout = nn.ModuleDict()
        self.slot: dict[str, Slot] = {}
        self.scaling: dict[str, float] = {}
        self._active_adapter = adapter_name
        self._disable_adapters = False
        self.merged_adapters = []
        self.update_layer(adapter_name, slot, dropout)

    def update_layer(self, adapter_name: str, slot: Slot, dropout: float) -> None:
        """Take part in adapter ``adapter_name`` (its pool must exist) at ``slot``."""
        self.lora_dropout[adapter_name] = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.slot[adapter_name] = slot
        self.scaling[adapter_name] = self.pool(adapter_name).config.scaling

    def pool(self, adapter_name: str) -> SharedLoRAPool:
        return self.pools.aslora_pool[adapter_name]

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def factors(self, adapter_name: str = DEFAULT_ADAPTER) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) this layer reads now for ``adapter_name``: its shared A and the B ``b_map`` points it at."""
        slot = self.slot[adapter_name]
        pool = self.pool(adapter_name)
        return pool.lora_A[slot.a_key], pool.row(slot)

    def effective_B(self, adapter_name: str = DEFAULT_ADAPTER, scaled: bool = True) -> torch.Tensor:
        """This layer's B of ``adapter_name`` now, ``(out_features, r)`` (see ``SharedLoRAPool.effective_B``)."""
        return self.pool(adapter_name).effective_B(self.slot[adapter_name], scaled=scaled)

    def delta_weight(self, adapter_name: str = DEFAULT_ADAPTER) -> torch.Tensor:
        """``ΔW`` of ``adapter_name``, ``(out_features, in_features)``, in fp32."""
        return self.pool(adapter_name).delta_weight(self.slot[adapter_name])

    get_delta_weight = delta_weight  # PEFT's name

    # ----------------------------------------------------------------------------------------
    # merging into W (PEFT's merge_adapter / unmerge_adapter / merge_and_unload)
    @torch.no_grad()
    def merge(self, safe_merge: bool = False, adapter_names: Optional[list[str]] = None) -> None:
        """``W ← W + ΔW`` for each active (or named) adapter. The addition is done in float32 and
        cast back, because adding a small ``ΔW`` to bf16/fp16 weights in their own precision rounds
        much of it away; ``safe_merge`` refuses non-finite results before writing anything."""
        for name in check_adapters_to_merge(self, adapter_names):
            if name not in self.slot:
                continue
            weight = self.get_base_layer().weight
            merged = weight.float() + self.delta_weight(name).to(weight.device)
            if safe_merge and not torch.isfinite(merged).all():
                raise ValueError(f"NaNs detected in the merged weights. The adapter {name} seems to be broken")
            weight.data = merged.to(weight.dtype)
            self.merged_adapters.append(name)

    @torch.no_grad()
    def unmerge(self) -> None:
        """Undo :meth:`merge`, last merged first (``W ← W − ΔW`` with the same ΔW: unmerge before a tie)."""
        while self.merged_adapters:
            name = self.merged_adapters.pop()
            weight = self.get_base_layer().weight
            weight.data = (weight.float() - self.delta_weight(name).to(weight.device)).to(weight.dtype)

    # ----------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self.disable_adapters:
            if self.merged:
                self.unmerge()
            return self.base_layer(x, *args, **kwargs)
        if self.merged:
            return self.base_layer(x, *args, **kwargs)
        names = [name for name in self.active_adapters if name in self.slot]
        if not args and not kwargs and self._adds_in_place(x):
            return self._forward_in_place(x, names)
        result = self.base_layer(x, *args, **kwargs)
        for name in names:
            result = self._add_update(result, x, name)
        return result

    def _adds_in_place(self, x: torch.Tensor) -> bool:
        """Whether the updates may be accumulated into the base layer's own output: only where that
        output is a fresh tensor nobody else sees — a plain ``nn.Linear`` (no subclass such as a
        quantised linear, no patched ``forward``), no forward hook on it or global one (a hook may
        keep the output, and would see the tokens flattened), outside autocast (in-place ops are not
        autocast, so a bf16 output could meet an fp32 B)."""
        base = self.base_layer
        return (
            type(base) is nn.Linear
            and x.dim() >= 2
            and not (base._forward_hooks or base._forward_pre_hooks or "forward" in base.__dict__)
            and not (nn.modules.module._global_forward_hooks or nn.modules.module._global_forward_pre_hooks)
            and not torch.is_autocast_enabled(x.device.type)
        )

    def _forward_in_place(self, x: torch.Tensor, names: list[str]) -> torch.Tensor:
        """``W x + Σ (α/r)·B·(A x)`` with each update accumulated into ``W x`` by one in-place GEMM.

        ``nn.Linear`` acts on each token alone, so it runs on the tokens as rows of a matrix (the
        same numbers), whose output is then the 2-D ``C`` of ``C ← C + (α/r)·(A x)·Bᵀ``
        (``addmm_``, the scaling its ``alpha``). Nothing a linear's backward saves is its output, so
        writing into it is safe; against a new output per update (``torch.addmm``) this saves a
        ``tokens × out_features`` allocation and pass per call — on MiniLM-L6 about 1 % of a training
        step (``make bench``), the difference that brings the adapter to within its two small GEMMs
        of the frozen base."""
        flat = x.reshape(-1, x.shape[-1])
        result = self.base_layer(flat)
        for name in names:
            result = self._add_update(result, flat, name, in_place=True)
        return result.view(*x.shape[:-1], result.shape[-1])

    def _add_update(
        self, result: torch.Tensor, x: torch.Tensor, adapter_name: str, in_place: bool = False
    ) -> torch.Tensor:
        """``result + (α/r)·B·(A x)``; ``in_place``: written into ``result``, which must then be the
        2-D ``tokens × out_features`` output of the base layer itself (see ``_forward_in_place``)."""
        pool, slot = self.pool(adapter_name), self.slot[adapter_name]
        a = pool.lora_A[slot.a_key]
        # The adapter computes in its own (fp32) dtype, as PEFT's LoRA does.
        hidden = F.linear(self.lora_dropout[adapter_name](x).to(a.dtype), a)
        # (α/r)·[diag(v)]·B·[diag(u)], out × r: the scaling on this small matrix, never on a
        # tokens-sized tensor (nor, in the backward, on h's tokens × r gradient)
        b = pool.effective_B(slot)
        if result.dtype == hidden.dtype == b.dtype and result.dim() >= 2:
            # W x + (α/r)·B·(A x) as one GEMM, the addition fused into addmm. Its right operand is
            # Bᵀ laid out row-major (r × out, one small copy), so autograd takes B's gradient as
            # hᵀ·g rather than gᵀ·h: the orientation MKL runs ~4× faster at MiniLM-L6's shapes
            # (2,048 tokens × 384 × r 8); against addmm_(h, Bᵀ, alpha=α/r), 1.9 ms less per
            # MiniLM-L6 step (its 12 layers timed in one process, interleaved)
            # Compiled, the plain transpose: inductor lays out its own operands, and with this copy
            # inside the graph its generated CPU code corrupts the heap (torch 2.13; caught by
            # tests/aslora/adapters/test_compile_and_checkpointing.py, run under inductor)
            bt = b.t() if torch.compiler.is_compiling() else b.t().contiguous()
            if in_place:
                # ``result`` itself, never a view of it: an in-place op on a view makes autograd
                # rebuild the base's gradient through CopySlices (a zero-filled tokens × out buffer
                # and a copy per call, ~25 % of the adapter's cost on MiniLM-L6)
                return result.addmm_(hidden, bt)
            c, h = result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1])
            return torch.addmm(c, h, bt).view(result.shape)
        return result + F.linear(hidden, b).to(result.dtype)

    def extra_repr(self) -> str:
        return ", ".join(
            f"{name}: slot={slot.key}, A={slot.a_key}, B group={slot.bank}, scaling={self.scaling[name]:g}"
            for name, slot in self.slot.items()
        )
