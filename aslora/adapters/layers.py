"""The adapted linear layer: a frozen ``nn.Linear`` plus a low-rank update drawn from the pool.

    h = W x + (α / r) · B_{g(i)} · A_{a(i)} · dropout(x)                 (LoRA Eq. 3; ASLoRA §3.1)
    h = W x + (α / r) · diag(v_i) · B · diag(u_i) · A · dropout(x)        (Tied-LoRA, vBuA)

The layer owns no adapter tensor: it holds a reference to the model-level pool and looks its
factors up by slot key on every call, so a tie performed by the merge controller takes effect at
the next forward with no surgery on the layer.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from aslora.adapters.pool import SharedLoRAPool


class SharedLoRALinear(nn.Module):
    """``nn.Linear`` wrapper whose update uses the pool's shared A and (possibly tied) B.

    Args:
        base_layer: the frozen pretrained projection ``W`` (kept as ``self.base_layer``, so the
            state-dict key of ``W`` gains the PEFT-style ``.base_layer`` infix).
        pool: the model-level pool; referenced, not registered, so shared tensors are stored once.
        slot_key: this layer's key in ``pool.slots``.
        dropout: probability of dropout on the adapter input.
    """

    def __init__(self, base_layer: nn.Linear, pool: SharedLoRAPool, slot_key: str, dropout: float) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.__dict__["pool"] = pool  # a plain reference: nn.Module would otherwise register it here too
        self.slot_key = slot_key
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scaling = pool.config.scaling

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    @property
    def weight(self) -> torch.Tensor:  # code that inspects ``module.weight`` (e.g. dtype checks) keeps working
        return self.base_layer.weight

    def delta_weight(self) -> torch.Tensor:
        """``ΔW = (α/r) · [diag(v)] B [diag(u)] A``, shape ``(out_features, in_features)``, in fp32."""
        a, b = self.pool.factors(self.slot_key)
        a, b = a.float(), b.float()
        if self.pool.is_tied_lora:
            u = self.pool.lora_u[self.slot_key].float()
            v = self.pool.lora_v[self.slot_key].float()
            return (v[:, None] * b * u[None, :]) @ a * self.scaling
        return b @ a * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(x)
        slot = self.pool.slots[self.slot_key]
        b = self.pool.lora_B[slot.b_key]
        # The adapter computes in its own (fp32) dtype, then casts back, as PEFT's LoRA does.
        dropout_active = self.training and not isinstance(self.lora_dropout, nn.Identity)
        hidden = self.pool.project(
            slot.a_key, self.lora_dropout(x) if dropout_active else x,
            reusable=self.pool.config.reuse_input_projection and not dropout_active,
        )
        if self.pool.is_tied_lora:
            hidden = hidden * self.pool.lora_u[self.slot_key]
            update = F.linear(hidden, b) * self.pool.lora_v[self.slot_key]
        else:
            update = F.linear(hidden, b)
        return result + (update * self.scaling).to(result.dtype)

    def extra_repr(self) -> str:
        slot = self.pool.slots[self.slot_key]
        return f"slot={self.slot_key}, A={slot.a_key}, B={slot.b_key}, scaling={self.scaling:g}"
