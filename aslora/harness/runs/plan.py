"""One plan per run: how many optimizer steps, how long the warm-up, when ASLoRA ties — computed
once, after the settings are validated, and read by everything downstream (the pre-load check, the
run's summary, the loop, the report), so no two places can disagree about a run's length.

Steps are counted **per process**, as the loop takes them: under DDP or FSDP with ``N`` processes
each optimizer step consumes ``N`` batches, so an epoch of ``B`` batches is ``⌈B / N⌉`` steps. A
merge schedule pinned in steps (the paper's ``T_s = 320, m = 240``) that fits one process's run can
therefore not fit an 8-process one; the plan says so before any weights load.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.schedule import MergeSchedule


@dataclass(frozen=True)
class RunPlan:
    num_train_examples: int
    num_processes: int
    steps_per_epoch: int
    """Optimizer steps per epoch on each process: ``⌈⌈examples / batch⌉ / processes⌉``."""
    total_steps: int
    warmup_steps: int
    """``⌈warmup_ratio · total_steps⌉``: the linear warm-up of the learning rate."""
    schedule: MergeSchedule | None
    """ASLoRA's merge schedule resolved in this run's steps (``None`` for other adapters): the one
    the loop hands to :class:`~aslora.adapters.merging.MergeController`, so the ties fall where the
    plan says, with nothing resolved twice."""
    adapter_config: Any

    @property
    def merge_steps(self) -> tuple[int, ...]:
        """The optimizer steps at which ASLoRA's merge events fall (Algorithm 1: ``T_s + k·m``); empty otherwise."""
        return tuple(self.schedule.event_steps) if self.schedule is not None else ()

    def as_dict(self) -> dict[str, Any]:
        """The plan as the report records it (the adapter config is in the report's config already)."""
        return {
            "num_train_examples": self.num_train_examples,
            "num_processes": self.num_processes,
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "merge_steps": list(self.merge_steps),
        }


def steps_per_epoch(num_examples: int, batch_size: int, num_processes: int = 1) -> int:
    """Optimizer steps per epoch when each of ``num_processes`` takes whole batches in turn."""
    return math.ceil(math.ceil(num_examples / batch_size) / num_processes)


def world_size() -> int:
    """The number of processes of this launch (``WORLD_SIZE``, set by torchrun and accelerate launch)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def make_plan(settings: Any, num_train_examples: int, num_processes: int | None = None) -> RunPlan:
    """The plan of a run of ``settings`` (a ``RunSettings``) on ``num_train_examples`` examples.

    Raises:
        ValueError: an ASLoRA merge schedule that cannot complete within the run, or whose first tie
            falls inside the learning-rate warm-up — both saying what to set. A tie decided during
            warm-up compares running means of B's that have barely moved (at step 1 of a linear
            warm-up the lr is 0, so every B is still its zero init and every distance is 0).
    """
    processes = world_size() if num_processes is None else num_processes
    per_epoch = steps_per_epoch(num_train_examples, settings.train.batch_size, processes)
    total = settings.train.epochs * per_epoch
    warmup = math.ceil(settings.train.warmup_ratio * total)
    config = settings.adapter_config()
    schedule = None
    if isinstance(config, ASLoRAConfig):
        where = (
            f" (steps per process: {processes} processes share each epoch's "
            f"{math.ceil(num_train_examples / settings.train.batch_size)} batches)"
            if processes > 1
            else ""
        )
        try:
            schedule = config.resolve_schedule(total)
        except ValueError as error:
            raise ValueError(f"{error}{where}") from None
        if schedule.max_events and schedule.first_event_step <= warmup:
            raise ValueError(
                f"the first ASLoRA merge would be at step {schedule.first_event_step}, within the learning-rate "
                f"warm-up (steps 1–{warmup} of {total}{where}, train.warmup_ratio={settings.train.warmup_ratio}): ties "
                f"would be decided on B's that have not moved. Start merging later (adapter.params.merge_start_fraction / "
                f"merge_start_step), train longer, or lower train.warmup_ratio"
            )
    return RunPlan(num_train_examples, processes, per_epoch, total, warmup, schedule, config)
