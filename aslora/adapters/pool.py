"""The model-level pool that stores every shared low-rank factor exactly once.

Adapted layers hold a plain Python reference to the pool (not a sub-module), so each A and each
surviving B appears once in ``model.parameters()`` and once in ``model.state_dict()``, under
``aslora_pool.lora_A.<key>`` and ``aslora_pool.lora_B.<key>`` — the PEFT VeRA pattern of shared
tensors at model level (style.md). The layer→B map, the merge history and the running-mean count
travel in the pool's ``extra_state``, so ``model.state_dict()`` alone can restore a run.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from aslora.adapters.config import SharedLoRAConfig, TiedLoRAConfig

POOL_ATTRIBUTE = "aslora_pool"


@dataclass
class Slot:
    """One adapted linear layer: where it sits and which shared factors it uses."""

    module_name: str
    module_type: str
    depth: int
    """Position among the adapted modules of the same type, in forward order (0 = lowest)."""
    in_features: int
    out_features: int
    a_key: str
    b_key: str

    @property
    def key(self) -> str:
        return f"{self.module_type}_{self.depth}"


class TensorBufferDict(nn.Module):
    """A dict of buffers (``nn.ParameterDict`` would make them parameters)."""

    def __init__(self) -> None:
        super().__init__()

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._buffers[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value)

    def __delitem__(self, key: str) -> None:
        del self._buffers[key]

    def __contains__(self, key: str) -> bool:
        return key in self._buffers

    def keys(self) -> list[str]:
        return list(self._buffers.keys())

    def values(self) -> list[torch.Tensor]:
        return list(self._buffers.values())


class SharedLoRAPool(nn.Module):
    """Storage of A's, B's (and Tied-LoRA's scaling vectors) with the layer→factor maps.

    Args:
        config: the adapter's config (ASLoRA, ShareLoRA or Tied-LoRA).
        slots: the adapted layers, in forward order.
        track_running_means: keep ``B̄`` (ASLoRA Eq. 3) for each B.
        device, dtype: where the factors live. The dtype is float32 even for a bf16/fp16 base
            model (PEFT's ``autocast_adapter_dtype`` does the same): low-precision adapters lose
            the small updates that low-rank factors receive.
    """

    def __init__(
        self, config: SharedLoRAConfig, slots: list[Slot], *, track_running_means: bool,
        device: torch.device | str | None = None, dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.config = config
        self.slots: dict[str, Slot] = {slot.key: slot for slot in slots}
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_u = nn.ParameterDict()  # Tied-LoRA: per-layer rank scaling, R^r
        self.lora_v = nn.ParameterDict()  # Tied-LoRA: per-layer output scaling, R^{d_out}
        self.running_mean_B = TensorBufferDict()
        self.num_mean_updates = 0
        self.merge_history: list[dict[str, Any]] = []
        self.track_running_means = track_running_means
        # a_key → (weak ref to input, input version, A version, grad mode, x·Aᵀ); see project()
        self._projection_cache: dict[str, tuple] = {}

        for slot in slots:
            if slot.a_key not in self.lora_A:
                self.lora_A[slot.a_key] = nn.Parameter(
                    torch.empty(config.r, slot.in_features, device=device, dtype=dtype)
                )
            if slot.b_key not in self.lora_B:
                self.lora_B[slot.b_key] = nn.Parameter(
                    torch.zeros(slot.out_features, config.r, device=device, dtype=dtype)
                )
                if track_running_means:
                    self.running_mean_B[slot.b_key] = torch.zeros(
                        slot.out_features, config.r, device=device, dtype=torch.float32
                    )
            if isinstance(config, TiedLoRAConfig):
                self.lora_u[slot.key] = nn.Parameter(torch.ones(config.r, device=device, dtype=dtype))
                self.lora_v[slot.key] = nn.Parameter(torch.ones(slot.out_features, device=device, dtype=dtype))
        for a in self.lora_A.values():
            _init_lora_A(a)

    # ----------------------------------------------------------------------------------------
    # lookups used by the layers on every forward
    def factors(self, slot_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        slot = self.slots[slot_key]
        return self.lora_A[slot.a_key], self.lora_B[slot.b_key]

    def project(self, a_key: str, x: torch.Tensor, *, reusable: bool) -> torch.Tensor:
        """``x·Aᵀ`` for the A under ``a_key``, computed once per input tensor when ``reusable``.

        q and v of one attention block are called with the same hidden-states tensor object and,
        under global sharing, the same A: the second call returns the first's product. The entry
        is valid only for that very tensor (held weakly, so the cache never keeps activations
        alive), unmodified (``_version``), with A unmodified (the optimizer bumps its version) and
        in the same grad mode. Autograd then sums both modules' gradients into the one product.
        """
        a = self.lora_A[a_key]
        if not reusable:
            return F.linear(x.to(a.dtype), a)
        grad_mode = torch.is_grad_enabled()
        cached = self._projection_cache.get(a_key)
        if (cached is not None and cached[0]() is x and cached[1] == x._version
                and cached[2] == a._version and cached[3] == grad_mode):
            return cached[4]
        product = F.linear(x.to(a.dtype), a)
        self._projection_cache[a_key] = (weakref.ref(x), x._version, a._version, grad_mode, product)
        return product

    def __getstate__(self) -> dict[str, Any]:
        # The projection cache is transient (a weak reference and a graph node): a copy or a
        # pickle of the model starts without it, as a fresh forward would.
        state = self.__dict__.copy()
        state["_projection_cache"] = {}
        return state

    @property
    def is_tied_lora(self) -> bool:
        return isinstance(self.config, TiedLoRAConfig)

    def sharing_map(self) -> dict[str, str]:
        """Module name → key of the B it uses now."""
        return {slot.module_name: slot.b_key for slot in self.slots.values()}

    def members(self, b_key: str) -> list[Slot]:
        return [slot for slot in self.slots.values() if slot.b_key == b_key]

    # ----------------------------------------------------------------------------------------
    # running means (ASLoRA Eq. 3)
    @torch.no_grad()
    def update_running_means(self) -> None:
        """``B̄^t = B̄^{t−1} + (B^t − B̄^{t−1}) / t`` — the incremental form of ``(1/t) Σ_k B^k``.

        One fused ``lerp`` over all B's, no host–device synchronisation, so it stays off the
        critical path of the training step.
        """
        if not self.track_running_means:
            return
        self.num_mean_updates += 1
        keys = list(self.lora_B.keys())
        means = [self.running_mean_B[k] for k in keys]
        current = [self.lora_B[k].detach().to(torch.float32) for k in keys]
        torch._foreach_lerp_(means, current, 1.0 / self.num_mean_updates)

    # ----------------------------------------------------------------------------------------
    # ties (ASLoRA §3.2)
    @torch.no_grad()
    def tie(self, *, lower: str, upper: str, update_ratio: float, step: int, distance: float,
            group: str) -> nn.Parameter:
        """Make every layer that uses B ``lower`` use B ``upper`` instead; return the retired
        parameter so the caller can drop its optimizer state.

        The survivor becomes ``(1 − λ)·B_upper + λ·B_lower`` (λ = ``update_ratio``); it keeps the
        upper B's running mean, because from now on it is the upper B that keeps training.
        """
        if lower == upper or lower not in self.lora_B or upper not in self.lora_B:
            raise ValueError(f"cannot tie B {lower!r} to B {upper!r}: both must be distinct live B's")
        survivor = self.lora_B[upper]
        retired = self.lora_B[lower]
        if update_ratio:
            survivor.mul_(1.0 - update_ratio).add_(retired.to(survivor.dtype), alpha=update_ratio)
        moved = [slot.module_name for slot in self.members(lower)]
        for slot in self.members(lower):
            slot.b_key = upper
        del self.lora_B[lower]
        if lower in self.running_mean_B:
            del self.running_mean_B[lower]
        self.merge_history.append({
            "step": step, "group": group, "kept": upper, "retired": lower, "distance": distance,
            "moved_layers": moved, "layers_sharing": [s.module_name for s in self.members(upper)],
        })
        return retired

    def restore_sharing(self, sharing: dict[str, str]) -> None:
        """Re-apply a saved slot→B map to a freshly built pool: retire every B that no slot uses.

        Used before ``load_state_dict`` so the parameter set matches the saved one.
        """
        unknown = set(sharing) - set(self.slots)
        if unknown:
            raise ValueError(f"saved sharing map names layers this model does not have: {sorted(unknown)}")
        missing = set(self.slots) - set(sharing)
        if missing:
            raise ValueError(f"saved sharing map lacks adapted layers of this model: {sorted(missing)}")
        for slot_key, b_key in sharing.items():
            if b_key not in self.lora_B:
                raise ValueError(f"saved sharing map points layer {slot_key!r} at unknown B {b_key!r}")
            self.slots[slot_key].b_key = b_key
        used = {slot.b_key for slot in self.slots.values()}
        for key in list(self.lora_B.keys()):
            if key not in used:
                del self.lora_B[key]
                if key in self.running_mean_B:
                    del self.running_mean_B[key]

    # ----------------------------------------------------------------------------------------
    # state that is not a tensor travels as extra state (torch.save-able, JSON-friendly)
    def get_extra_state(self) -> dict[str, Any]:
        return {
            "sharing": {key: slot.b_key for key, slot in self.slots.items()},
            "merge_history": [dict(event) for event in self.merge_history],
            "num_mean_updates": self.num_mean_updates,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        current = {key: slot.b_key for key, slot in self.slots.items()}
        if state["sharing"] != current:
            raise ValueError(
                "the pool's layer→B map differs from the saved one; call restore_sharing(saved map) "
                "before load_state_dict"
            )
        self.merge_history = [dict(event) for event in state["merge_history"]]
        self.num_mean_updates = int(state["num_mean_updates"])

    def describe(self) -> dict[str, Any]:
        return {
            "slots": [asdict(slot) for slot in self.slots.values()],
            "num_A": len(self.lora_A),
            "num_distinct_B": len(self.lora_B),
        }


def find_pool(model: nn.Module) -> SharedLoRAPool | None:
    """The pool attached by ``apply_adapter``, or ``None`` for models without one."""
    for module in model.modules():
        if isinstance(module, SharedLoRAPool):
            return module
    return None


def _init_lora_A(a: torch.Tensor) -> None:
    # loralib / PEFT: Kaiming-uniform with a = √5, the nn.Linear default, so our A matches theirs.
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))
