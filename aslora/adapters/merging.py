"""ASLoRA's adaptive merging of B's (Hu et al., arXiv 2412.10135, §3.2 and Algorithm 1).

After each optimizer step ``t`` the training loop calls :meth:`MergeController.step`, which

1. updates every running mean ``B̄_i^t = (1/t) Σ_{k≤t} B_i^k`` (Eq. 3), and
2. at a merge event (``t > T_s`` and ``(t − T_s) mod m = 0``), in each merge group, finds the
   candidate pair of B's with the smallest ``‖B̄_i − B̄_j‖_F`` (Eq. 4) and ties it: every layer
   that used the lower B uses the upper B from then on.

Optimizer state: the retired B leaves the optimizer (its entry in ``param_groups`` and its Adam
moments are dropped); the survivor keeps its own moments. With λ = 0 the survivor's value is
unchanged, so its moments still describe it; the retired B's moments describe a tensor that no
longer exists.

All decisions are taken from the parameters' values, which are identical on every data-parallel
process after the optimizer step, and the distances are computed in float64 on the device so the
same pair wins on every process.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import nn

from aslora.adapters.config import ASLoRAConfig, MergeSchedule
from aslora.adapters.pool import SharedLoRAPool, Slot, find_pool


@dataclass(frozen=True)
class MergeEvent:
    step: int
    group: str
    kept: str
    retired: str
    distance: float


class MergeController:
    """Runs ASLoRA's running means and merge schedule for one adapted model.

    Args:
        model: a model returned by ``apply_adapter(model, ASLoRAConfig(...))``.
        total_steps: the run's number of optimizer steps; required when the schedule is given as
            fractions, and used to reject a schedule whose last merge would never fire.

    Raises:
        ValueError: the model has no ASLoRA pool, ``max_merges`` exceeds what a merge group can
            do, or the schedule cannot complete within ``total_steps``.
    """

    def __init__(self, model: nn.Module, total_steps: int | None = None) -> None:
        pool = find_pool(model)
        if pool is None or not isinstance(pool.config, ASLoRAConfig):
            raise ValueError("MergeController needs a model adapted with ASLoRAConfig")
        self.pool: SharedLoRAPool = pool
        self.config: ASLoRAConfig = pool.config
        self.schedule: MergeSchedule = self.config.resolve_schedule(total_steps)
        for group, slots in self._groups().items():
            possible = len({s.b_key for s in slots}) - 1 + self._merges_done(group)
            if self.config.max_merges > possible:
                raise ValueError(
                    f"max_merges={self.config.max_merges} is more than merge group {group!r} allows: "
                    f"it has {possible + 1} B's, so at most {possible} merges"
                )

    @property
    def num_distinct_B(self) -> int:
        return len(self.pool.lora_B)

    def step(self, step: int, optimizer: torch.optim.Optimizer | None = None) -> list[MergeEvent]:
        """Call once after each optimizer step; ``step`` counts optimizer steps from 1.

        Returns the ties made at this step (empty unless it is a merge event).
        """
        self.pool.update_running_means()
        if self.config.max_merges == 0 or not self.schedule.is_event(step):
            return []
        events = []
        for group, slots in self._groups().items():
            if self._merges_done(group) >= self.config.max_merges:
                continue
            choice = self._choose_pair(slots, group, step)
            if choice is None:
                continue
            lower, upper, distance = choice
            threshold = self.config.merge_distance_threshold
            if threshold is not None and distance > threshold:
                continue
            retired = self.pool.tie(
                lower=lower, upper=upper, update_ratio=self.config.merge_update_ratio,
                step=step, distance=distance, group=group,
            )
            if optimizer is not None:
                drop_from_optimizer(optimizer, retired)
            events.append(MergeEvent(step=step, group=group, kept=upper, retired=lower, distance=distance))
        return events

    # ------------------------------------------------------------------------------------------
    def _groups(self) -> dict[str, list[Slot]]:
        """Merge groups: module types (``per_module``) or B shapes (``joint``)."""
        groups: dict[str, list[Slot]] = {}
        for slot in self.pool.slots.values():
            if self.config.merge_scope == "per_module":
                name = slot.module_type
            else:
                name = f"shape_{slot.out_features}x{self.config.r}"
            groups.setdefault(name, []).append(slot)
        return groups

    def _merges_done(self, group: str) -> int:
        return sum(1 for event in self.pool.merge_history if event["group"] == group)

    def _choose_pair(self, slots: list[Slot], group: str, step: int) -> tuple[str, str, float] | None:
        """The pair to tie, as (lower, upper, running-mean distance), by ``merge_selection``:
        the closest candidate pair, or (ablations) a random or the lowest candidate pair.

        One host–device synchronisation per merge group per event; none on ordinary steps.
        """
        keys = sorted({s.b_key for s in slots}, key=lambda k: self._height(k, slots))
        if len(keys) < 2:
            return None
        means = torch.stack([self.pool.running_mean_B[k].double().flatten() for k in keys])
        distances = torch.cdist(means[None], means[None])[0]
        allowed = self._candidate_mask(keys, slots).to(distances.device)
        distances = distances.masked_fill(~allowed, float("inf"))
        if self.config.merge_selection == "similarity":
            i, j = divmod(int(torch.argmin(distances)), len(keys))
        else:
            pairs = [(a, b) for a in range(len(keys)) for b in range(a + 1, len(keys)) if allowed[a, b]]
            if not pairs:
                return None
            if self.config.merge_selection == "fixed":
                i, j = pairs[0]
            else:  # crc32, not hash(): Python salts str hashes per process
                generator = torch.Generator().manual_seed(zlib.crc32(group.encode()) * 1_000_003 + step)
                i, j = pairs[int(torch.randint(len(pairs), (1,), generator=generator))]
        distance = float(distances[i, j])
        if distance == float("inf"):
            return None
        lower, upper = (keys[i], keys[j]) if i < j else (keys[j], keys[i])
        return lower, upper, distance

    def _height(self, b_key: str, slots: list[Slot]) -> tuple[int, int]:
        """Order of B's from lowest to highest: the deepest layer that uses it, then module type
        order (for ``joint`` scope, where a query and a value can sit at the same depth)."""
        type_order = {t: n for n, t in enumerate(dict.fromkeys(s.module_type for s in slots))}
        return max((s.depth, type_order[s.module_type]) for s in slots if s.b_key == b_key)

    def _candidate_mask(self, keys: list[str], slots: list[Slot]) -> torch.Tensor:
        n = len(keys)
        mask = torch.ones(n, n, dtype=torch.bool)
        mask.fill_diagonal_(False)
        if self.config.merge_candidates == "all":
            return mask
        depths = {k: [s.depth for s in slots if s.b_key == k] for k in keys}
        for i in range(n):
            for j in range(n):
                if i != j:
                    mask[i, j] = any(abs(a - b) <= 1 for a in depths[keys[i]] for b in depths[keys[j]])
        return mask


def drop_from_optimizer(optimizer: torch.optim.Optimizer, parameter: nn.Parameter) -> None:
    """Remove ``parameter`` from every param group and delete its state (e.g. Adam moments)."""
    for group in optimizer.param_groups:
        group["params"] = [p for p in group["params"] if p is not parameter]
    optimizer.state.pop(parameter, None)
