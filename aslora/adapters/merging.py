"""ASLoRA's adaptive merging of B's (Hu et al., arXiv 2412.10135, §3.2 and Algorithm 1).

After each optimizer step ``t`` the training loop (or ``aslora.integrations``' Trainer callback)
calls :meth:`MergeController.step`, which

1. updates every running mean ``B̄_i^t = (1/t) Σ_{k≤t} B_i^k`` (Eq. 3), and
2. at a merge event (``t > T_s`` and ``(t − T_s) mod m = 0``), in each merge group, finds the
   candidate pair of live B's with the smallest ``‖B̄_i − B̄_j‖_F`` (Eq. 4) and ties it: every
   layer that read the lower B reads the upper B from then on.

A tie only rewrites the pool's layer→B map (``pool.py``): no parameter is created or deleted,
so the optimizer is never touched — any optimizer (each B is its own 2-D parameter, so Muon and
Adafactor see LoRA's B's: ``tests/aslora/adapters/test_optimizer_parity.py``), any trainer. The survivor keeps its own Adam
moments. The retired B is zeroed and held at zero after every optimizer step (with its running
mean), so whatever an optimizer's momentum or weight decay would do to it, its value stops at the
tie and a saved adapter reloads to the live run's state dict.

Determinism. Decisions are taken from the parameters' values, which are identical on every
data-parallel process after the optimizer step. Each distance is the norm of an explicit
difference in float64 (not ``torch.cdist``, whose matmul path for larger inputs makes exactly
equal B's come out at slightly different, order-dependent distances), and an exact tie between
distances goes to the lowest candidate pair, so the same pair wins on every process and device.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pool import SharedLoRAPool
from aslora.adapters.pools import find_pool, find_pools
from aslora.adapters.schedule import MergeSchedule
from aslora.adapters.slot import Slot


@dataclass(frozen=True)
class MergeEvent:
    step: int
    group: str
    kept: str
    retired: str
    distance: float
    moved_layers: tuple[str, ...] = ()
    """Module names that read the retired B until this tie."""
    layers_sharing: tuple[str, ...] = ()
    """Module names that read the kept B after this tie."""


class MergeController:
    """Runs ASLoRA's running means and merge schedule for one adapted model.

    Args:
        model: a model returned by ``apply_adapter(model, ASLoRAConfig(...))`` (or a wrapper of it:
            DDP, FSDP, ``torch.compile``, PEFT — the pool is found among its modules).
        adapter_name: whose ties these are, on a model with several adapters (each ties on its
            own: one controller per adapter); ``None``: the model's only adapter.
        total_steps: the run's number of optimizer steps; required when the schedule is given as
            fractions, and used to reject a schedule whose last merge would never fire.
        schedule: the schedule already resolved for this run (the harness's plan resolves it once
            and passes it here); ``None``: resolved from the config and ``total_steps``.

    Raises:
        ValueError: the model has no ASLoRA pool (or several adapters and no ``adapter_name``), ``max_merges`` exceeds what a merge group can
            do or names a group the model does not have, or the schedule cannot complete within
            ``total_steps``.
    """

    def __init__(
        self,
        model: nn.Module,
        total_steps: int | None = None,
        adapter_name: str | None = None,
        schedule: MergeSchedule | None = None,
    ) -> None:
        pool = find_pool(model, adapter_name)
        if pool is None or not isinstance(pool.config, ASLoRAConfig):
            raise ValueError(
                "MergeController needs a model adapted with ASLoRAConfig"
                + (f" (adapter {adapter_name!r} is a {type(pool.config).__name__})" if pool is not None else "")
            )
        self.pool: SharedLoRAPool = pool
        self.adapter_name = adapter_name or next(n for n, p in find_pools(model).aslora_pool.items() if p is pool)
        self._layers = [m for m in model.modules() if isinstance(m, SharedLoRALinear)]
        self.config: ASLoRAConfig = pool.config
        if schedule is None:
            schedule = self.config.resolve_schedule(total_steps)
        elif schedule.max_events != self.config.most_merges or (
            total_steps is not None and schedule.max_events and schedule.last_event_step > total_steps
        ):  # a plan of another run or another config: refused rather than followed
            raise ValueError(
                f"the schedule given ({schedule}) does not fit this adapter (max_merges {self.config.most_merges}) "
                f"and a run of {total_steps} steps"
            )
        self.schedule: MergeSchedule = schedule
        groups = self._groups()
        if isinstance(self.config.max_merges, dict):
            unknown = sorted(set(self.config.max_merges) - set(groups))
            if unknown:
                raise ValueError(
                    f"max_merges names merge group(s) {unknown} this model does not have; its groups: {sorted(groups)}"
                )
        live = pool.live_rows()
        done = self.pool.merges_by_bank()  # groups are banks
        for group in groups:
            allowed = self.config.merges_allowed(group)
            possible = len(live[group]) - 1 + done[group]
            if allowed > possible:
                raise ValueError(
                    f"max_merges={allowed} is more than merge group {group!r} allows: "
                    f"it has {possible + 1} B's, so at most {possible} merges"
                )

    @property
    def num_distinct_B(self) -> int:
        return self.pool.num_distinct_B

    def step(self, step: int) -> list[MergeEvent]:
        """Call once after each optimizer step; ``step`` counts optimizer steps from 1.

        Returns the ties made at this step (empty unless it is a merge event).
        """
        self.pool.hold_retired()  # undo whatever this optimizer step did to a retired B
        self.pool.update_running_means()
        if self.config.most_merges == 0 or not self.schedule.is_event(step):
            return []
        if any(self.adapter_name in layer.merged_adapters for layer in self._layers):
            raise ValueError(
                f"adapter {self.adapter_name!r} is merged into the base weights (merge_adapter): a tie now would "
                f"change ΔW under the merged weights; unmerge_adapter() before training on"
            )
        events = []
        done = self.pool.merges_by_bank()  # groups are banks
        for group, slots in self._groups().items():
            if done[group] >= self.config.merges_allowed(group):
                continue
            choice = self._choose_pair(slots, group, step)
            if choice is None:
                continue
            lower, upper, distance = choice
            threshold = self.config.merge_distance_threshold
            if threshold is not None and distance > threshold:
                continue
            self.pool.tie(
                bank=group,
                lower=lower,
                upper=upper,
                update_ratio=self.config.merge_update_ratio,
                step=step,
                distance=distance,
            )
            record = self.pool.merge_history[-1]
            events.append(
                MergeEvent(
                    step=step,
                    group=group,
                    kept=record["kept"],
                    retired=record["retired"],
                    distance=distance,
                    moved_layers=tuple(record["moved_layers"]),
                    layers_sharing=tuple(record["layers_sharing"]),
                )
            )
        return events

    # ------------------------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[Slot]]:
        """Merge groups = B banks: module types (``per_module``) or B shapes (``joint``)."""
        groups: dict[str, list[Slot]] = {}
        for slot in self.pool.slots.values():
            groups.setdefault(slot.bank, []).append(slot)
        return groups

    def _choose_pair(self, slots: list[Slot], group: str, step: int) -> tuple[int, int, float] | None:
        """The pair of rows to tie, as (lower, upper, running-mean distance), by ``merge_selection``:
        the closest candidate pair, or (ablations) a random or the lowest candidate pair.

        One host–device synchronisation per merge group per event; none on ordinary steps.
        """
        members = self._members(slots)
        rows = sorted(members, key=lambda row: self._height(members[row]))
        pairs = [
            (i, j)
            for i in range(len(rows))
            for j in range(i + 1, len(rows))
            if self._is_candidate(members[rows[i]], members[rows[j]])
        ]
        if not pairs:
            return None
        if self.config.merge_selection == "similarity":
            distances = self._distances(group, rows, pairs)
            best = min(range(len(pairs)), key=lambda k: (distances[k], k))  # exact ties: lowest pair
        elif self.config.merge_selection == "fixed":
            best = 0
            distances = self._distances(group, rows, pairs[:1])
        else:  # random; crc32, not hash(): Python salts str hashes per process
            generator = torch.Generator().manual_seed(zlib.crc32(group.encode()) * 1_000_003 + step)
            best = int(torch.randint(len(pairs), (1,), generator=generator))
            distances = {best: self._distances(group, rows, [pairs[best]])[0]}
        i, j = pairs[best]
        return rows[i], rows[j], distances[best]

    def _distances(self, group: str, rows: list[int], pairs: list[tuple[int, int]]) -> list[float]:
        """``‖B̄_i − B̄_j‖_F`` in float64 for each pair, from explicit differences."""
        means = self.pool.group(group, self.pool.running_mean_B)
        first = torch.tensor([rows[i] for i, _ in pairs], device=means.device)
        second = torch.tensor([rows[j] for _, j in pairs], device=means.device)
        difference = means.index_select(0, first).double() - means.index_select(0, second).double()
        return torch.linalg.vector_norm(difference.flatten(1), dim=1).tolist()

    def _members(self, slots: list[Slot]) -> dict[int, list[Slot]]:
        """Live row → the slots that read it now."""
        current = self.pool.current_rows()
        members: dict[int, list[Slot]] = {}
        for slot in slots:
            members.setdefault(current[slot.key], []).append(slot)
        return members

    def _height(self, members: list[Slot]) -> tuple[int, int]:
        """Order of B's from lowest to highest: the highest layer (the real block index, so a
        partial target list keeps its geometry) that reads it, then module-type order (for
        ``joint`` scope, where a query and a value sit in the same layer)."""
        type_order = {t: n for n, t in enumerate(dict.fromkeys(s.module_type for s in self.pool.slots.values()))}
        return max((s.layer, type_order[s.module_type]) for s in members)

    def _is_candidate(self, first: list[Slot], second: list[Slot]) -> bool:
        if self.config.merge_candidates == "all":
            return True
        return any(abs(a.layer - b.layer) <= 1 for a in first for b in second)
