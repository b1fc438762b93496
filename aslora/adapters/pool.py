"""The model-level pool that stores every shared low-rank factor exactly once.

Adapted layers hold a plain Python reference to the pool (not a sub-module), so each tensor
appears once in ``model.parameters()`` and once in ``model.state_dict()`` — the PEFT VeRA pattern
of shared tensors at model level (style.md).

B banks (the VB-LoRA vector-bank pattern). The B's of one merge group live in ONE parameter of
shape ``(num_B, out_features, r)``; which row each adapted layer reads is an integer in the
``b_map`` buffer. An ASLoRA tie rewrites ``b_map`` (and, for λ > 0, the survivor's row): it changes
*which* B a layer reads, never *which parameters exist*. So the optimizer, DDP's buckets, FSDP's
flat or sharded parameters, ``torch.compile``'s guards and a Trainer's checkpoints all see the same
parameter set from the first step to the last. A retired row stays allocated and simply stops
being read: its gradient is exactly zero, and because AdamW is elementwise the live rows' updates
equal those of an optimizer that never held the retired row (``tests/aslora/adapters/test_bank_parity.py``).

State-dict keys are fixed for the whole run and every value is a tensor:

* ``lora_A.<a_key>`` (r, d_in) · ``lora_B.<bank>`` (num_B, d_out, r) · Tied-LoRA's ``lora_u.<slot>``,
  ``lora_v.<slot>``;
* ``running_mean_B.<bank>`` — ASLoRA's B̄ (Eq. 3), same shape as the bank, float32;
* ``b_map`` (int64, one entry per adapted layer) — the row each layer reads;
* ``num_mean_updates`` (int64) — t of Eq. 3; ``num_merges`` (int64) and ``merge_log`` (float64,
  one row per possible tie: step, group, retired row, kept row, distance) — the merge history,
  from which :attr:`SharedLoRAPool.merge_history` is rebuilt, so any framework that saves and
  loads a state dict (HF Trainer, accelerate, FSDP's distributed checkpoints) resumes a run.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig, SharedLoRAConfig, TiedLoRAConfig

POOL_ATTRIBUTE = "aslora_pool"
_LOG_FIELDS = ("step", "group", "retired_row", "kept_row", "distance")


@dataclass
class Slot:
    """One adapted linear layer: where it sits and which shared factors it uses."""

    module_name: str
    module_type: str
    depth: int
    """Position among the adapted modules of the same type, in forward order (0 = lowest)."""
    layer: int
    """The block index in the module's path (``…layer.3.attention…`` → 3), the order and the
    adjacency of ASLoRA's merges; ``depth`` when the path holds no index."""
    in_features: int
    out_features: int
    a_key: str
    bank: str
    """The B bank (= the merge group) this layer's B lives in."""
    index: int
    """This layer's position in ``b_map``."""
    row: int
    """The bank row this layer reads before any tie (its own B)."""

    @property
    def key(self) -> str:
        return f"{self.module_type}_{self.depth}"


def layer_index(module_name: str, fallback: int) -> int:
    """The last integer component of a module path: ``model.layers.12.self_attn.q_proj`` → 12."""
    numbers = [int(part) for part in module_name.split(".") if re.fullmatch(r"\d+", part)]
    return numbers[-1] if numbers else fallback


class TensorBufferDict(nn.Module):
    """A dict of buffers (``nn.ParameterDict`` would make them parameters)."""

    def __getitem__(self, key: str) -> torch.Tensor:
        return self._buffers[key]

    def __setitem__(self, key: str, value: torch.Tensor) -> None:
        self.register_buffer(key, value)

    def __contains__(self, key: str) -> bool:
        return key in self._buffers

    def keys(self) -> list[str]:
        return list(self._buffers.keys())

    def values(self) -> list[torch.Tensor]:
        return list(self._buffers.values())

    def items(self) -> list[tuple[str, torch.Tensor]]:
        return list(self._buffers.items())


class SharedLoRAPool(nn.Module):
    """Storage of A's, B banks (and Tied-LoRA's scaling vectors) with the layer→row map.

    Args:
        config: the adapter's config (ASLoRA, ShareLoRA or Tied-LoRA).
        slots: the adapted layers, in forward order, with their bank and initial row.
        device, dtype: where the factors live. The dtype is float32 even for a bf16/fp16 base
            model (PEFT's ``autocast_adapter_dtype`` does the same): low-precision adapters lose
            the small updates that low-rank factors receive.
    """

    def __init__(
        self,
        config: SharedLoRAConfig,
        slots: list[Slot],
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.config = config
        self.slots: dict[str, Slot] = {slot.key: slot for slot in slots}
        self.track_running_means = isinstance(config, ASLoRAConfig)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_u = nn.ParameterDict()  # Tied-LoRA: per-layer rank scaling, R^r
        self.lora_v = nn.ParameterDict()  # Tied-LoRA: per-layer output scaling, R^{d_out}
        self.running_mean_B = TensorBufferDict()

        # Row names: a row is named after the layer that owned it first (``query_3``), or after
        # the module type for Tied-LoRA's one B per type — the names reports and figures use.
        self.row_names: dict[str, list[str]] = {}
        out_features: dict[str, int] = {}
        for slot in slots:
            names = self.row_names.setdefault(slot.bank, [])
            if slot.row == len(names):
                names.append(slot.module_type if isinstance(config, TiedLoRAConfig) else slot.key)
            out_features[slot.bank] = slot.out_features
            if slot.a_key not in self.lora_A:
                self.lora_A[slot.a_key] = nn.Parameter(
                    torch.empty(config.r, slot.in_features, device=device, dtype=dtype)
                )
            if isinstance(config, TiedLoRAConfig):
                self.lora_u[slot.key] = nn.Parameter(torch.ones(config.r, device=device, dtype=dtype))
                self.lora_v[slot.key] = nn.Parameter(torch.ones(slot.out_features, device=device, dtype=dtype))
        self.row_of_name = {
            name: (bank, row) for bank, names in self.row_names.items() for row, name in enumerate(names)
        }
        for bank, names in self.row_names.items():
            shape = (len(names), out_features[bank], config.r)
            self.lora_B[bank] = nn.Parameter(torch.zeros(shape, device=device, dtype=dtype))
            if self.track_running_means:
                self.running_mean_B[bank] = torch.zeros(shape, device=device, dtype=torch.float32)
        for a in self.lora_A.values():
            _init_lora_A(a)

        self.register_buffer("b_map", torch.tensor([s.row for s in slots], dtype=torch.long, device=device))
        self.register_buffer("num_mean_updates", torch.zeros((), dtype=torch.long, device=device))
        capacity = sum(len(names) - 1 for names in self.row_names.values())
        self.register_buffer("num_merges", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("merge_log", torch.zeros(capacity, len(_LOG_FIELDS), dtype=torch.float64, device=device))
        self.bank_names = list(self.row_names)

    # ----------------------------------------------------------------------------------------
    # lookups used by the layers on every forward
    def factors(self, slot_key: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(A, B) of one layer now: its A and the bank row ``b_map`` points it at."""
        slot = self.slots[slot_key]
        return self.lora_A[slot.a_key], self.row(slot)

    def row(self, slot: Slot) -> torch.Tensor:
        # index_select with the map as a tensor: no Python int is read from the map, so no
        # host sync and nothing for torch.compile to specialise on (a tie never recompiles)
        return self.lora_B[slot.bank].index_select(0, self.b_map[slot.index : slot.index + 1]).squeeze(0)

    @property
    def is_tied_lora(self) -> bool:
        return isinstance(self.config, TiedLoRAConfig)

    def current_rows(self) -> dict[str, int]:
        """Slot key → the row it reads now (one host sync). On the meta device, where no value
        exists, the map is the initial one: nothing can have been tied there."""
        rows = [s.row for s in self.slots.values()] if self.b_map.is_meta else self.b_map.tolist()
        return {key: rows[slot.index] for key, slot in self.slots.items()}

    def sharing_map(self) -> dict[str, str]:
        """Slot key → name of the B it reads now (``{"query_1": "query_2", …}`` after a tie)."""
        return {key: self.row_names[self.slots[key].bank][row] for key, row in self.current_rows().items()}

    def live_rows(self) -> dict[str, list[int]]:
        """Bank → the rows some layer still reads, ascending."""
        rows = self.current_rows()
        live: dict[str, set[int]] = {bank: set() for bank in self.bank_names}
        for key, row in rows.items():
            live[self.slots[key].bank].add(row)
        return {bank: sorted(r) for bank, r in live.items()}

    @property
    def num_distinct_B(self) -> int:
        return sum(len(rows) for rows in self.live_rows().values())

    def live_numel(self) -> dict[int, int]:
        """``id(parameter)`` → the elements that are part of the adapter now: a bank counts its
        live rows only (a retired row is allocated but read by no layer); other tensors whole."""
        live = self.live_rows()
        counts = {id(p): p.numel() for p in self.parameters()}
        for bank, rows in live.items():
            p = self.lora_B[bank]
            counts[id(p)] = len(rows) * p.shape[1] * p.shape[2]
        return counts

    # ----------------------------------------------------------------------------------------
    # running means (ASLoRA Eq. 3)
    @torch.no_grad()
    def update_running_means(self) -> None:
        """``B̄^t = B̄^{t−1} + (B^t − B̄^{t−1}) / t`` — the incremental form of ``(1/t) Σ_k B^k``.

        One fused ``lerp`` over all banks, the weight a tensor, so there is no host–device
        synchronisation and it stays off the critical path of the training step. Retired rows
        keep being averaged (they are never read again); skipping them would cost a sync.
        """
        if not self.track_running_means:
            return
        self.num_mean_updates += 1
        weight = 1.0 / self.num_mean_updates.to(torch.float32)
        means = [self.running_mean_B[bank] for bank in self.bank_names]
        current = [_full(self.lora_B[bank]).to(torch.float32) for bank in self.bank_names]
        for mean, value in zip(means, current):
            mean.lerp_(value, weight)

    # ----------------------------------------------------------------------------------------
    # ties (ASLoRA §3.2)
    @torch.no_grad()
    def tie(self, *, bank: str, lower: int, upper: int, update_ratio: float, step: int, distance: float) -> None:
        """Every layer that reads row ``lower`` of ``bank`` reads row ``upper`` from now on.

        The survivor becomes ``(1 − λ)·B_upper + λ·B_lower`` (λ = ``update_ratio``); it keeps the
        upper row's running mean and optimizer moments, because from now on it is the upper B
        that keeps training. Nothing is allocated or freed.
        """
        live = self.live_rows().get(bank, [])
        if lower == upper or lower not in live or upper not in live:
            raise ValueError(
                f"cannot tie row {lower} to row {upper} of bank {bank!r}: both must be distinct live rows "
                f"(live: {live})"
            )
        if update_ratio:
            _blend_row(self.lora_B[bank], upper, lower, update_ratio)
        in_bank = torch.tensor([s.index for s in self.slots.values() if s.bank == bank], device=self.b_map.device)
        moved = in_bank[self.b_map[in_bank] == lower]
        self.b_map[moved] = upper
        n = int(self.num_merges)
        self.merge_log[n] = torch.tensor(
            [step, self.bank_names.index(bank), lower, upper, distance], dtype=torch.float64
        )
        self.num_merges += 1

    def merges_by_bank(self) -> dict[str, int]:
        """How many ties each B bank has had, read straight from ``merge_log``."""
        done = dict.fromkeys(self.bank_names, 0)
        for bank_index in self.merge_log[: int(self.num_merges), 1].tolist():
            done[self.bank_names[int(bank_index)]] += 1
        return done

    @property
    def merge_history(self) -> list[dict[str, Any]]:
        """The ties so far, rebuilt from ``merge_log`` by replaying them on the initial map:
        ``{"step", "group", "kept", "retired", "distance", "moved_layers", "layers_sharing"}``."""
        rows = {key: slot.row for key, slot in self.slots.items()}
        history = []
        for step, bank_index, lower, upper, distance in self.merge_log[: int(self.num_merges)].tolist():
            bank, lower, upper = self.bank_names[int(bank_index)], int(lower), int(upper)
            moved = [k for k, r in rows.items() if self.slots[k].bank == bank and r == lower]
            for key in moved:
                rows[key] = upper
            history.append(
                {
                    "step": int(step),
                    "group": bank,
                    "kept": self.row_names[bank][upper],
                    "retired": self.row_names[bank][lower],
                    "distance": distance,
                    "moved_layers": [self.slots[k].module_name for k in moved],
                    "layers_sharing": [
                        self.slots[k].module_name for k, r in rows.items() if self.slots[k].bank == bank and r == upper
                    ],
                }
            )
        return history

    @torch.no_grad()
    def restore(self, sharing: dict[str, str], merge_history: list[dict[str, Any]], num_mean_updates: int) -> None:
        """Set the layer→B map and the merge history from their JSON form (a saved adapter).

        Raises:
            ValueError: the map names layers or B's this pool does not have, or the history does
                not lead to that map.
        """
        unknown = set(sharing) - set(self.slots)
        missing = set(self.slots) - set(sharing)
        if unknown or missing:
            raise ValueError(
                f"saved sharing map does not fit this model: layers it names that the model lacks "
                f"{sorted(unknown)}, adapted layers it lacks {sorted(missing)}"
            )
        if len(merge_history) > self.merge_log.shape[0]:
            raise ValueError(
                f"saved merge history has {len(merge_history)} ties; this model allows {self.merge_log.shape[0]}"
            )
        self.b_map.copy_(torch.tensor([s.row for s in self.slots.values()]))
        self.num_merges.zero_()
        self.merge_log.zero_()
        for event in merge_history:
            bank_k, kept = self._row_named(event["kept"])
            bank_r, retired = self._row_named(event["retired"])
            if bank_k != bank_r:
                raise ValueError(f"saved merge history ties B's of different banks: {event}")
            self.tie(
                bank=bank_k,
                lower=retired,
                upper=kept,
                update_ratio=0.0,
                step=int(event["step"]),
                distance=float(event["distance"]),
            )
        if self.sharing_map() != dict(sharing):
            raise ValueError(
                "saved sharing map is not what the saved merge history leads to; the adapter files disagree"
            )
        self.num_mean_updates.fill_(int(num_mean_updates))

    def _row_named(self, name: str) -> tuple[str, int]:
        if name not in self.row_of_name:
            raise ValueError(f"saved adapter names B {name!r}, which this model does not have")
        return self.row_of_name[name]

    def describe(self) -> dict[str, Any]:
        return {
            "slots": [asdict(slot) for slot in self.slots.values()],
            "num_A": len(self.lora_A),
            "num_distinct_B": self.num_distinct_B,
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


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter that FSDP2 may have sharded into a DTensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _blend_row(bank: torch.Tensor, upper: int, lower: int, update_ratio: float) -> None:
    """``bank[upper] ← (1 − λ)·bank[upper] + λ·bank[lower]``, on a plain or a sharded bank."""
    if not hasattr(bank, "full_tensor"):
        bank[upper].mul_(1.0 - update_ratio).add_(bank[lower], alpha=update_ratio)
        return
    from torch.distributed.tensor import distribute_tensor

    full = bank.full_tensor()
    full[upper].mul_(1.0 - update_ratio).add_(full[lower], alpha=update_ratio)
    bank.copy_(distribute_tensor(full, bank.device_mesh, bank.placements))
