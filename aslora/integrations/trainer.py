"""ASLoRA in a Hugging Face ``Trainer`` (and TRL's trainers, which are Trainers).

    model = peft.get_peft_model(base, aslora.ASLoRAConfig(r=8, task_type="SEQ_CLS"))
    trainer = Trainer(model=model, args=args, train_dataset=train, ...)
    trainer.add_callback(ASLoRACallback(trainer))
    trainer.train()                       # or trainer.train(resume_from_checkpoint=True)

The callback runs ASLoRA's running means and merge schedule (Algorithm 1) where the paper puts
them: after every *optimizer* step, with ``t`` = ``state.global_step`` counting optimizer steps
from 1 — under gradient accumulation that is once per ``gradient_accumulation_steps``
micro-batches (``on_step_end``, not ``on_substep_end``). A schedule given as fractions resolves
against ``state.max_steps``; one that cannot complete stops the run in ``on_train_begin``, before
any step, with what to set.

Checkpoints and resume need nothing from the callback: a tie changes only tensors (the layer→B
map, the merge log, the running means) that are part of the adapter's state dict. With the
model wrapped by PEFT, the Trainer's checkpoints hold the adapter (live B rows, a few hundred KB),
not the base model, and ``resume_from_checkpoint`` continues the run exactly.

Each tie is logged to the Trainer's loggers (W&B, TensorBoard, …) when the callback is given the
trainer: ``aslora/num_B`` and ``aslora/merge_distance/<group>``. Without it, ties still go to
``state.log_history`` (saved in every checkpoint's ``trainer_state.json``) and Python logging:
a ``TrainerCallback`` is never handed the trainer, and its ``on_log`` runs after the reporters.
"""

from __future__ import annotations

import logging
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.merging import MergeController, MergeEvent
from aslora.adapters.pools import find_pools

log = logging.getLogger("aslora")


class ASLoRACallback(TrainerCallback):
    """Running means and ties for a model adapted with ``ASLoRAConfig`` (PEFT-wrapped or not).

    Args:
        trainer: the ``Trainer`` this callback is added to, so ties reach its loggers; optional.
        adapter_names: the ASLoRA adapters to run, each with its own schedule and ties; ``None``:
            every ASLoRA adapter that trains (whose pool has a parameter with ``requires_grad``).
    """

    def __init__(self, trainer: Any | None = None, adapter_names: list[str] | None = None) -> None:
        self.trainer = trainer
        self.adapter_names = adapter_names
        self.controllers: dict[str, MergeController] = {}
        self.events: list[MergeEvent] = []

    @property
    def controller(self) -> MergeController:
        """The controller of the one adapter this callback runs."""
        if len(self.controllers) != 1:
            raise ValueError(f"this callback runs {sorted(self.controllers)}: use .controllers[name]")
        return next(iter(self.controllers.values()))

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, model: Any = None, **kwargs: Any
    ) -> None:
        pools = find_pools(model) if model is not None else None
        aslora = {n: p for n, p in (pools.aslora_pool.items() if pools else ()) if isinstance(p.config, ASLoRAConfig)}
        names = self.adapter_names
        if names is None:
            names = [n for n, p in aslora.items() if any(t.requires_grad for t in p.parameters())]
        unknown = sorted(set(names) - set(aslora))
        if not names or unknown:
            raise ValueError(
                "ASLoRACallback needs a model adapted with aslora.ASLoRAConfig "
                "(peft.get_peft_model(model, ASLoRAConfig(...)) or aslora.apply_adapter)"
                + (
                    f"; adapters {unknown} are not ASLoRA adapters of this model (it has {sorted(aslora)})"
                    if unknown
                    else ""
                )
                + ("; none of its ASLoRA adapters trains" if aslora and not names else "")
            )
        # each resolves fractions against the run's optimizer steps and refuses an impossible schedule
        self.controllers = {n: MergeController(model, total_steps=state.max_steps, adapter_name=n) for n in names}
        for name, controller in self.controllers.items():
            if controller.schedule.max_events:
                log.info(
                    "ASLoRA (%s): %d merge events at steps %s of %d",
                    name,
                    controller.schedule.max_events,
                    ", ".join(map(str, controller.schedule.event_steps)),
                    state.max_steps,
                )

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        metrics: dict[str, float] = {}
        for name, controller in self.controllers.items():
            events = controller.step(state.global_step)
            if not events:
                continue
            self.events += events
            # one adapter logs as aslora/…; several as aslora/<adapter>/…
            key = "aslora" if len(self.controllers) == 1 else f"aslora/{name}"
            metrics[f"{key}/num_B"] = float(controller.num_distinct_B)
            metrics.update({f"{key}/merge_distance/{e.group}": e.distance for e in events})
            for event in events:
                log.info(
                    "ASLoRA tie at step %d (%s, %s): %s now read %s's B; distance %.4g",
                    event.step,
                    name,
                    event.group,
                    ", ".join(event.moved_layers),
                    event.kept,
                    event.distance,
                )
        if not metrics:
            return
        if self.trainer is not None:
            self.trainer.log(metrics)
        else:
            state.log_history.append({**metrics, "step": state.global_step})
