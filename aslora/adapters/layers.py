"""The adapted linear layer: a frozen ``nn.Linear`` plus a low-rank update drawn from the pool.

    h = W x + (α / r) · B_{g(i)} · A_{a(i)} · dropout(x)                 (LoRA Eq. 3; ASLoRA §3.1)
    h = W x + (α / r) · diag(v_i) · B · diag(u_i) · A · dropout(x)        (Tied-LoRA, vBuA)

The layer owns no adapter tensor: it holds a reference to the model-level pool and reads its B
as row ``b_map[i]`` of its bank on every call, so a tie (a write into ``b_map``) takes effect at
the next forward with no surgery on the layer, the optimizer or a compiled graph.

The forward is a pure function of ``x`` and the pool's tensors — no cache, no Python state read
from tensor values — which is what makes it safe under activation checkpointing (the recomputed
forward saves exactly what the first one did), ``torch.compile`` (no graph break, no guard on the
map's values) and ``torch.no_grad`` generation.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from aslora.adapters.pool import SharedLoRAPool, Slot


class SharedLoRALinear(nn.Module):
    """``nn.Linear`` wrapper whose update uses the pool's shared A and (possibly tied) B.

    Args:
        base_layer: the frozen pretrained projection ``W`` (kept as ``self.base_layer``, so the
            state-dict key of ``W`` gains the PEFT-style ``.base_layer`` infix).
        pool: the model-level pool; referenced, not registered, so shared tensors are stored once.
        slot: this layer's slot in ``pool.slots``.
        dropout: probability of dropout on the adapter input.
    """

    def __init__(self, base_layer: nn.Linear, pool: SharedLoRAPool, slot: Slot, dropout: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["pool"] = pool  # a plain reference: nn.Module would otherwise register it here too
        self.slot = slot
        self.slot_key = slot.key
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = pool.config.scaling
        self.is_tied_lora = pool.is_tied_lora
        self.adapter_enabled = True
        """``False`` inside PEFT's ``disable_adapter()``: the layer computes ``W x`` alone."""

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:  # code that inspects ``module.weight`` (e.g. dtype checks) keeps working
        return self.base_layer.weight

    def effective_B(self, scaled: bool = True) -> torch.Tensor:
        """``(α/r) · [diag(v)] B [diag(u)]``, shape ``(out_features, r)``: the scaling is applied to
        this small matrix rather than to the ``tokens × out_features`` update (``scaled=False``:
        without ``α/r``, as PEFT stores B)."""
        b = self.pool.row(self.slot)
        if scaled:
            b = b * self.scaling
        if self.is_tied_lora:
            b = self.pool.lora_v[self.slot_key][:, None] * b * self.pool.lora_u[self.slot_key][None, :]
        return b

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = (α/r) · [diag(v)] B [diag(u)] A``, shape ``(out_features, in_features)``, in fp32."""
        return self.effective_B().float() @ self.pool.lora_A[self.slot.a_key].float()

    def get_base_layer(self) -> nn.Linear:
        return self.base_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        if not self.adapter_enabled:
            return result
        a = self.pool.lora_A[self.slot.a_key]
        b = self.effective_B()
        # The adapter computes in its own (fp32) dtype, as PEFT's LoRA does.
        hidden = F.linear(self.lora_dropout(x).to(a.dtype), a)
        if result.dtype == hidden.dtype and result.dim() >= 2:
            # W x + B·(A x) with the addition fused into the GEMM: one kernel and no extra
            # tokens × out_features temporary (this is most of the gap to the frozen base's step)
            fused = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), b.t())
            return fused.view(result.shape)
        return result + F.linear(hidden, b).to(result.dtype)

    def extra_repr(self) -> str:
        return f"slot={self.slot_key}, A={self.slot.a_key}, B bank={self.slot.bank}, scaling={self.scaling:g}"
