"""The model-level pools that store every shared low-rank factor exactly once, one pool per adapter.

    model.shared_lora                       SharedLoRAPools (``pools.py``): a PEFT tuner layer on the base model
        .aslora_pool["default"]             SharedLoRAPool (this module): one adapter's A's, B's, map, running means, ties
        .aslora_pool["other"]               a second adapter: its own of all of these

Adapted layers (``layers.py``) hold a plain Python reference to the container, not a sub-module
reference, so each tensor appears once in ``model.parameters()`` and once in ``model.state_dict()``
— the pattern PEFT's VeRA uses for its shared projections (tensors held once, at model level). The container is a PEFT
``BaseTunerLayer`` whose per-adapter entries are the pools, so PEFT's own walks over tuner layers
(``set_adapter``, ``delete_adapter``, ``disable_adapter``, ``get_layer_status``, which tensors are
the adapter's and train) treat the pools as they treat LoRA's ``lora_A``/``lora_B`` dicts. It sits
on the base model, not on PEFT's tuner, so an adapter applied with :func:`aslora.apply_adapter` and
one applied with ``peft.get_peft_model`` are the same modules, and FSDP's root unit holds the pools.

B's, as in LoRA. Every B is its own 2-D ``(out_features, r)`` parameter, named after the layer that
owned it first (``lora_B.query_3``), so an optimizer that acts on whole matrices (Muon, Adafactor's
factored moments) sees exactly LoRA's problem. Which B each layer reads is an integer in the
``b_map`` buffer; a layer reads ``stack(B's of its merge group)[b_map[i]]``. An ASLoRA tie rewrites
``b_map`` (and, for λ > 0, the survivor's values): it changes *which* B a layer reads, never *which
parameters exist*. So the optimizer, DDP's buckets, FSDP's sharded parameters, ``torch.compile``'s
guards and a Trainer's checkpoints see the same parameter set from the first step to the last. A
retired B stays allocated, stops being read (its gradient is exactly zero) and is held at zero with
its running mean (:meth:`SharedLoRAPool.hold_retired`); the live B's updates are those of an
optimizer that never held it (``tests/aslora/adapters/test_optimizer_parity.py``).

State-dict keys (under ``aslora_pools.aslora_pool.<adapter>.``) are fixed for the whole run and every
value is a tensor:

* ``lora_A.<a_key>`` (r, d_in) · ``lora_B.<B name>`` (d_out, r) · Tied-LoRA's ``lora_u.<slot>``,
  ``lora_v.<slot>``;
* ``running_mean_B.<B name>`` — ASLoRA's B̄ (Eq. 3), same shape as its B, float32;
* ``b_map`` (int64, one entry per adapted layer) — the B each layer reads, as its row in its group;
* ``num_mean_updates`` (int64) — t of Eq. 3; ``num_merges`` (int64) and ``merge_log`` (float64,
  one row per possible tie: step, group, retired row, kept row, distance) — the merge history,
  from which :attr:`SharedLoRAPool.merge_history` is rebuilt, so any framework that saves and
  loads a state dict (HF Trainer, accelerate, FSDP's distributed checkpoints) resumes a run.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig, SharedLoRAConfig, TiedLoRAConfig
from aslora.adapters.slot import Slot

_LOG_FIELDS = ("step", "group", "retired_row", "kept_row", "distance")


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
    """One adapter's A's, B's (and Tied-LoRA's scaling vectors) with the layer→B map.

    Args:
        config: the adapter's config (ASLoRA, ShareLoRA or Tied-LoRA).
        slots: the adapted layers, in forward order, with their merge group and initial row.
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
        self.slot_of_module: dict[str, Slot] = {slot.module_name: slot for slot in slots}
        self.track_running_means = isinstance(config, ASLoRAConfig)
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_u = nn.ParameterDict()  # Tied-LoRA: per-layer rank scaling, R^r
        self.lora_v = nn.ParameterDict()  # Tied-LoRA: per-layer output scaling, R^{d_out}
        self.running_mean_B = TensorBufferDict()

        # B names: a B is named after the layer that owned it first (``query_3``), or after the
        # module type for Tied-LoRA's one B per type — the names reports and figures use.
        self.row_names: dict[str, list[str]] = {}
        for slot in slots:
            names = self.row_names.setdefault(slot.bank, [])
            if slot.row == len(names):
                name = slot.module_type if isinstance(config, TiedLoRAConfig) else slot.key
                names.append(name)
                self.lora_B[name] = nn.Parameter(torch.zeros(slot.out_features, config.r, device=device, dtype=dtype))
                if self.track_running_means:
                    self.running_mean_B[name] = torch.zeros(
                        slot.out_features, config.r, device=device, dtype=torch.float32
                    )
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
        for a in self.lora_A.values():
            _init_lora_A(a)
        if not config.init_weights:  # after A, so the default initialisation draws what it always drew
            for b in self.lora_B.values():
                _init_random_B(b)

        self.register_buffer("b_map", torch.tensor([s.row for s in slots], dtype=torch.long, device=device))
        self.register_buffer("num_mean_updates", torch.zeros((), dtype=torch.long, device=device))
        capacity = sum(len(names) - 1 for names in self.row_names.values())
        self.register_buffer("num_merges", torch.zeros((), dtype=torch.long, device=device))
        self.register_buffer("merge_log", torch.zeros(capacity, len(_LOG_FIELDS), dtype=torch.float64, device=device))
        self.bank_names = list(self.row_names)
        self.home_device = torch.device(device) if device is not None else torch.device("cpu")
        """Where the pool was built (beside the adapted weights); PEFT's loading moves it back there."""

    # ----------------------------------------------------------------------------------------
    # dtype casts: the merge state keeps its own dtypes
    def _apply(self, fn: Any, recurse: bool = True) -> "SharedLoRAPool":
        """``model.to(dtype)``, ``.half()``, ``.bfloat16()``, ``.double()`` cast every floating tensor;
        the merge state must not follow. The running means stay float32 (Eq. 3 accumulates updates
        of ~lr/t: in bf16 they round away) and ``merge_log`` float64 (it holds steps and rows as exact
        integers up to 2⁵³; in bf16 a tie at step 1,281 reads 1,280, in fp16 past 65,504 ``inf``).
        They move with the model (device), keeping their dtype; the factors cast as PEFT's do."""
        held = [(self._buffers, "merge_log")] + [
            (self.running_mean_B._buffers, k) for k in self.running_mean_B._buffers
        ]
        kept = {}
        for buffers, key in held:  # None is skipped by nn.Module._apply, so the dict keeps its order
            kept[id(buffers), key], buffers[key] = buffers[key], None
        try:
            super()._apply(fn, recurse)
        finally:
            for buffers, key in held:
                tensor = kept[id(buffers), key]
                if tensor is not None:
                    # where fn sends a tensor of this dtype, without its dtype change
                    device = fn(torch.empty(0, dtype=tensor.dtype, device=tensor.device)).device
                    tensor = tensor.to(device=device)
                buffers[key] = tensor
        return self

    # ----------------------------------------------------------------------------------------
    # lookups used by the layers on every forward
    def row(self, slot: Slot) -> torch.Tensor:
        """The B ``slot``'s layer reads now, ``(out_features, r)``."""
        names = self.row_names[slot.bank]
        if len(names) == 1:  # Tied-LoRA's one B per type, or a group of one layer: nothing to choose
            return self.lora_B[names[0]]
        if torch.compiler.is_compiling():
            # Compiled: the map read as a tensor (index_select), never as a Python int, so there is
            # nothing for torch.compile to specialise on and a tie never recompiles. It stacks the
            # group's B's (group size × d_out × r) per layer call, and its backward writes a
            # group-sized gradient: a cost that grows with depth, which the eager path below avoids.
            group = torch.stack([self.lora_B[name] for name in names])
            return group.index_select(0, self.b_map[slot.index : slot.index + 1]).squeeze(0)
        # Eager: the map on the host (read from the device only after it changed, _map_on_host), the
        # B taken as it is — no copy, and the backward reaches only the B's that are read, so the cost
        # per layer does not depend on how many B's the group has. Same values, same gradients.
        rows = self._map_on_host()
        b = self.lora_B[names[rows[slot.index]]]
        if rows[slot.index] != slot.row:
            # This layer's own B is retired (held at zero). It still gets a gradient — exactly zero,
            # as the compiled path gives it — so every parameter takes part in every backward (DDP
            # without find_unused_parameters) and an optimizer sees what it saw before the tie.
            # One kernel: b + 0·B_own is b, and its backward gives B_own 0·grad.
            b = torch.add(b, self.lora_B[names[slot.row]], alpha=0.0)
        return b

    def effective_B(self, slot: Slot, scaled: bool = True) -> torch.Tensor:
        """``(α/r) · [diag(v)] B [diag(u)]``, shape ``(out_features, r)``: the scaling is applied to
        this small matrix rather than to the ``tokens × out_features`` update (``scaled=False``:
        without ``α/r``, as PEFT stores B)."""
        b = self.row(slot)
        if scaled:
            b = b * self.config.scaling
        if self.is_tied_lora:
            b = self.lora_v[slot.key][:, None] * b * self.lora_u[slot.key][None, :]
        return b

    def delta_weight(self, slot: Slot) -> torch.Tensor:
        """``ΔW = (α/r) · [diag(v)] B [diag(u)] A``, shape ``(out_features, in_features)``, in fp32."""
        return self.effective_B(slot).float() @ self.lora_A[slot.a_key].float()

    def group(self, bank: str, tensors: nn.ParameterDict | TensorBufferDict) -> torch.Tensor:
        """A merge group's B's (or their running means) stacked in row order, ``(n, d_out, r)``,
        whole even where FSDP2 shards them (``DTensor.full_tensor``)."""
        return torch.stack([_full(tensors[name]) for name in self.row_names[bank]])

    @property
    def is_tied_lora(self) -> bool:
        return isinstance(self.config, TiedLoRAConfig)

    def current_rows(self) -> dict[str, int]:
        """Slot key → the row it reads now. On the meta device, where no value exists, the map is
        the initial one: nothing can have been tied there."""
        rows = [s.row for s in self.slots.values()] if self.b_map.is_meta else self._map_on_host()
        return {key: rows[slot.index] for key, slot in self.slots.items()}

    def _map_on_host(self) -> list[int]:
        """``b_map`` as Python ints, read from the device only when the map changed: a tie, a
        ``load_state_dict``, a ``restore`` or a move each bump the tensor's version counter or
        replace the tensor, so (identity, version) says when the copy is stale. Ordinary steps
        cost no host–device synchronisation."""
        key = (id(self.b_map), self.b_map._version)
        if self.__dict__.get("_host_map_key") != key:
            self.__dict__["_host_map"] = self.b_map.tolist()
            self.__dict__["_host_map_key"] = key
        return self.__dict__["_host_map"]

    def sharing_map(self) -> dict[str, str]:
        """Slot key → name of the B it reads now (``{"query_1": "query_2", …}`` after a tie)."""
        return {key: self.row_names[self.slots[key].bank][row] for key, row in self.current_rows().items()}

    def live_rows(self) -> dict[str, list[int]]:
        """Merge group → the rows some layer still reads, ascending."""
        rows = self.current_rows()
        live: dict[str, set[int]] = {bank: set() for bank in self.bank_names}
        for key, row in rows.items():
            live[self.slots[key].bank].add(row)
        return {bank: sorted(r) for bank, r in live.items()}

    def live_B_names(self) -> list[str]:
        """The names of the B's some layer still reads, in group and row order."""
        return [self.row_names[bank][row] for bank, rows in self.live_rows().items() for row in rows]

    @property
    def num_distinct_B(self) -> int:
        return sum(len(rows) for rows in self.live_rows().values())

    def live_numel(self) -> dict[int, int]:
        """``id(parameter)`` → the elements that are part of the adapter now: a retired B (allocated
        but read by no layer) counts 0; every other tensor whole."""
        counts = {id(p): p.numel() for p in self.parameters()}
        live = set(self.live_B_names())
        for name, p in self.lora_B.items():
            if name not in live:
                counts[id(p)] = 0
        return counts

    # ----------------------------------------------------------------------------------------
    # running means (ASLoRA Eq. 3)
    @torch.no_grad()
    def update_running_means(self) -> None:
        """``B̄^t = B̄^{t−1} + (B^t − B̄^{t−1}) / t`` — the incremental form of ``(1/t) Σ_k B^k``.

        One ``lerp`` per live B, the weight a tensor, so there is no host–device synchronisation
        and it stays off the critical path of the training step. A retired B's mean stops at zero
        with its B (:meth:`hold_retired`): nothing reads either again.
        """
        if not self.track_running_means:
            return
        self.num_mean_updates += 1
        weight = 1.0 / self.num_mean_updates.to(torch.float32)
        names = self.live_B_names()
        means = [self.running_mean_B[name] for name in names]
        current = [_full(self.lora_B[name]).to(torch.float32) for name in names]
        for mean, value in zip(means, current, strict=True):
            mean.lerp_(value, weight)

    @torch.no_grad()
    def hold_retired(self) -> None:
        """Keep every retired B (and its running mean) at zero. A tie zeroes them; an optimizer may
        still move a retired B afterwards (AdamW's momentum and weight decay act on a zero
        gradient), so the controller calls this after each optimizer step. Then a retired B's
        value is the same whatever the optimizer, and a save → load through any path — ours,
        PEFT's (which stores only what layers read), a Trainer checkpoint — gives the live run's
        full state dict. One ``zero_`` per retired B; no host sync."""
        for name in self.retired_B_names():
            self.lora_B[name].zero_()
            if self.track_running_means:
                self.running_mean_B[name].zero_()

    def retired_B_names(self) -> list[str]:
        live = set(self.live_B_names())
        return [name for name in self.lora_B.keys() if name not in live]

    # ----------------------------------------------------------------------------------------
    # ties (ASLoRA §3.2)
    @torch.no_grad()
    def tie(self, *, bank: str, lower: int, upper: int, update_ratio: float, step: int, distance: float) -> None:
        """Every layer that reads row ``lower`` of merge group ``bank`` reads row ``upper`` from now on.

        The survivor becomes ``(1 − λ)·B_upper + λ·B_lower`` (λ = ``update_ratio``); it keeps the
        upper B's running mean and optimizer moments, because from now on it is the upper B
        that keeps training. Nothing is allocated or freed.
        """
        live = self.live_rows().get(bank, [])
        if lower == upper or lower not in live or upper not in live:
            raise ValueError(
                f"cannot tie row {lower} to row {upper} of merge group {bank!r}: both must be distinct live rows "
                f"(live: {live})"
            )
        if update_ratio:
            # elementwise, so a B that FSDP2 shards (a DTensor) blends shard by shard
            kept, retired = (self.lora_B[self.row_names[bank][r]] for r in (upper, lower))
            kept.mul_(1.0 - update_ratio).add_(retired, alpha=update_ratio)
        in_bank = torch.tensor([s.index for s in self.slots.values() if s.bank == bank], device=self.b_map.device)
        moved = in_bank[self.b_map[in_bank] == lower]
        self.b_map[moved] = upper
        self.hold_retired()
        n = int(self.num_merges)
        self.merge_log[n] = torch.tensor(
            [step, self.bank_names.index(bank), lower, upper, distance], dtype=torch.float64
        )
        self.num_merges += 1

    def merges_by_bank(self) -> dict[str, int]:
        """How many ties each merge group has had, read straight from ``merge_log``."""
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
                raise ValueError(f"saved merge history ties B's of different groups: {event}")
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


def _init_lora_A(a: torch.Tensor) -> None:
    # loralib / PEFT: Kaiming-uniform with a = √5, the nn.Linear default, so our A matches theirs.
    nn.init.kaiming_uniform_(a, a=math.sqrt(5))


def _init_random_B(b: torch.Tensor) -> None:
    # PEFT's init_lora_weights=False for LoRA: B Kaiming-uniform like A, so ΔW is of A's scale
    nn.init.kaiming_uniform_(b, a=math.sqrt(5))


def _full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter that FSDP2 may have sharded into a DTensor."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
