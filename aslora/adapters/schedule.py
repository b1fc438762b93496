"""When ASLoRA ties: the merge events of one run, in optimizer steps (the paper's Algorithm 1).

A config gives the schedule as steps or as fractions of the run
(:meth:`aslora.adapters.config.ASLoRAConfig.resolve_schedule` checks it and resolves it against the
run's length); what it resolves to lives here, apart from the configs, because the merge controller,
the run plan and checkpoints all read it and none of them needs a config to do so.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MergeSchedule:
    """Merge events at ``t = start_step + k · interval_steps`` for ``k = 1 … max_events``."""

    start_step: int
    interval_steps: int
    max_events: int

    @property
    def first_event_step(self) -> int:
        return self.start_step + self.interval_steps

    @property
    def last_event_step(self) -> int:
        return self.start_step + self.max_events * self.interval_steps

    @property
    def event_steps(self) -> list[int]:
        """Every merge event's step: ``start_step + k · interval_steps``, ``k = 1 … max_events``."""
        return [self.start_step + k * self.interval_steps for k in range(1, self.max_events + 1)]

    def is_event(self, step: int) -> bool:
        """Algorithm 1: ``t > T_s`` and ``(t − T_s) mod m = 0``, at most ``max_events`` times."""
        if step <= self.start_step:
            return False
        offset = step - self.start_step
        return offset % self.interval_steps == 0 and offset // self.interval_steps <= self.max_events
