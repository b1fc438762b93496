"""The training loop: explicit, with its surgery visible (torchtune's "no training framework").

AdamW, linear warm-up then linear decay, gradient clipping, evaluation after each epoch with
best-epoch tracking, dynamic padding. ASLoRA's merge controller runs after every optimizer step;
a tie rewrites which B row a layer reads and leaves the parameter set — and so the optimizer,
DDP's buckets and a compiled graph — as it was. Built on ``accelerate``, so the same loop runs on
one CPU, one GPU or several processes (DDP, or FSDP2 through ``accelerate launch``).

Exact continuation: each epoch's order is a permutation drawn from ``(seed, epoch)`` alone, so a
resumed run skips the batches already done and sees the rest in the same order; checkpoints carry
every RNG state, so dropout draws the same masks. Resumed and uninterrupted runs end bit-identical
on CPU (``tests/aslora/harness/state/test_resume.py``).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, set_seed
from torch import nn

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.merging import MergeController
from aslora.adapters.pools import find_pool
from aslora.harness.inputs.data import TaskData
from aslora.harness.measuring.metrics import is_better
from aslora.harness.runs.console import describe_epoch, describe_tie
from aslora.harness.runs.plan import RunPlan
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.state import checkpoint as ckpt
from aslora.harness.state.resume_check import read_resume_point
from aslora.harness.state.trained_state import restore_model, trainable_state, trainable_state_keys
from aslora.harness.training import distributed
from aslora.harness.training.batching import (
    EpochShuffle,
    LengthGroupedShuffle,
    LengthOrder,
    evaluation_loader,
    lengths_of,
)
from aslora.harness.training.fit_record import RESUMABLE_FIELDS, FitOptions, FitResult, NonFiniteError
from aslora.harness.training.kept_predictions import encode_classes
from aslora.harness.training.optimization import build_optimization, enable_gradient_checkpointing
from aslora.harness.training.scoring import evaluate
from aslora.params import count_parameters

log = logging.getLogger("aslora")


Logger = Callable[[dict[str, float], int], None]


def fit(
    model: nn.Module,
    data: TaskData,
    collate: Callable,
    settings: TrainSettings,
    log_metrics: Logger | None = None,
    options: FitOptions | None = None,
    plan: RunPlan | None = None,
) -> FitResult:
    """Train ``model`` (already adapted) on ``data.train``; evaluate each epoch on validation
    (and test, where the task has labelled test data); return the per-epoch record.

    The best epoch is chosen on the validation main metric; the test score reported is the one
    at that epoch, so the held-out number is never selected on. ``plan``: the run's plan
    (``RunSettings.plan``), whose step count the loader must match and whose warm-up the schedule
    uses; without one (a library caller), both follow from the loader.
    """
    return _Fit(model, data, collate, settings, log_metrics, options or FitOptions(), plan).run()


class _Fit:
    """One call of ``fit``, stage by stage: accelerator → data → resume → optimisation → epochs
    (steps, evaluation, checkpoints) → finish. The order of the stages is the order in which they
    draw from the RNGs, which resumed == uninterrupted depends on."""

    def __init__(
        self,
        model: nn.Module,
        data: TaskData,
        collate: Callable,
        settings: TrainSettings,
        log_metrics: Logger | None,
        options: FitOptions,
        plan: RunPlan | None = None,
    ) -> None:
        self.model, self.data, self.collate, self.settings, self.options = model, data, collate, settings, options
        self.plan = plan
        self.log_metrics = log_metrics or (lambda metrics, step: None)
        self.pool = find_pool(model)
        # full fine-tuning saves no adapter, so it keeps no copy of its best epoch's weights
        self.keeps_adapter = self.pool is not None or hasattr(model, "peft_config")
        self.step, self.start_epoch, self.batches_done, self.epoch_losses = 0, 1, 0, []

    def run(self) -> FitResult:
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._setup_accelerator()
        self._setup_data()
        self._setup_resume()
        self._setup_optimization()
        settings = self.settings
        progress = tqdm(
            total=self.total_steps,
            initial=self.step,
            desc="train",
            disable=not (settings.progress_bar and self.accelerator.is_main_process),
        )
        started = time.perf_counter()
        # log lines (ties, epochs) print above the progress bar instead of through it
        with logging_redirect_tqdm(loggers=[logging.root]):  # the console handler Hydra installs
            for epoch in range(self.start_epoch, settings.epochs + 1):
                self._train_epoch(epoch, progress)
                self._evaluate_epoch(epoch)
                self.batches_done, self.epoch_losses = 0, []
            progress.close()
        return self._finish(started)

    # --- setup ---------------------------------------------------------------------------------
    def _setup_accelerator(self) -> None:

        # Every parameter receives a gradient at every step (a retired B row gets zeros), so DDP needs
        # no search for unused parameters; the pool's buffers (running means, layer→B map) are updated
        # identically on every process from synchronised B's, so they are not broadcast either.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=False, broadcast_buffers=self.pool is None)
        self.accelerator = Accelerator(
            mixed_precision=self.settings.mixed_precision, cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp]
        )
        set_seed(self.settings.seed)

    def _setup_data(self) -> None:
        data, settings, accelerator = self.data, self.settings, self.accelerator
        self.train_lengths = lengths_of(data.train) if settings.group_by_length else None
        # Evaluation longest first: a metric pairs each prediction with its own label, so the order
        # changes nothing but the padding (scripts/bench/batching.py measures the saving).
        eval_sets = {"val": data.validation} | ({"test": data.test} if data.test is not None else {})
        # the evaluation order (longest first) as dataset indices: kept predictions are put back in
        # the dataset's order, the same for every run of a task, so two runs pair example by example
        self.test_order = LengthOrder(lengths_of(data.test)).order if data.test is not None else []
        self.test_labels = None
        if (
            self.settings.test_each_epoch
            and self.test_order
            and data.spec.kind != "causal_lm"
            and not data.spec.is_regression
        ):
            self.test_labels = encode_classes(list(data.test["labels"]), list(range(len(self.test_order))))
        self.eval_loaders = {
            k: accelerator.prepare_data_loader(evaluation_loader(v, settings.eval_batch_size, self.collate))
            for k, v in eval_sets.items()
        }
        self.total_steps = settings.epochs * len(self._train_loader(1))
        if self.plan is not None and self.plan.total_steps != self.total_steps:  # the plan and the loader must agree
            raise RuntimeError(
                f"the run's plan has {self.plan.total_steps} steps ({self.plan.num_processes} process(es)), but this "
                f"process's loader gives {self.total_steps}: the plan's step count is wrong for this launch"
            )
        is_aslora = self.pool is not None and isinstance(self.pool.config, ASLoRAConfig)
        # built before the first step: an impossible merge schedule fails here, not mid-run
        schedule = self.plan.schedule if self.plan is not None else None  # the plan's, resolved once
        self.controller = MergeController(self.model, self.total_steps, schedule=schedule) if is_aslora else None
        if self.plan is None:  # a library caller: the plan follows from the loader, as the run's would
            self.plan = RunPlan(
                num_train_examples=len(data.train),
                num_processes=accelerator.num_processes,
                steps_per_epoch=self.total_steps // settings.epochs,
                total_steps=self.total_steps,
                warmup_steps=math.ceil(settings.warmup_ratio * self.total_steps),
                schedule=self.controller.schedule if self.controller is not None else None,
                adapter_config=self.pool.config if self.pool is not None else None,
            )
        self.warmup_steps = self.plan.warmup_steps
        self.result = FitResult(
            total_steps=self.total_steps,
            params_before=count_parameters(self.model).as_dict(),
            num_processes=accelerator.num_processes,
            is_main_process=accelerator.is_main_process,
        )

    def _train_loader(self, epoch: int):
        settings = self.settings
        sampler = (
            LengthGroupedShuffle(self.train_lengths, settings.batch_size, settings.seed, epoch)
            if settings.group_by_length
            else EpochShuffle(len(self.data.train), settings.seed, epoch)
        )
        # Every loader gets its own generator: creating an iterator draws a seed from the loader's
        # generator, or else from the global RNG — which would shift dropout masks after a resume.
        loader = torch.utils.data.DataLoader(
            self.data.train,
            batch_size=settings.batch_size,
            collate_fn=self.collate,
            sampler=sampler,
            generator=torch.Generator().manual_seed(settings.seed + epoch),
        )
        return self.accelerator.prepare_data_loader(loader)

    def _setup_resume(self) -> None:
        options, accelerator = self.options, self.accelerator
        self.resume_state, self.resume_dir, self.resume_rng = None, None, None
        if options.checkpoint_dir is not None:
            if options.resume:  # read and checked whole against this run before anything is restored
                point = options.resume_point or read_resume_point(
                    options.checkpoint_dir,
                    options.fingerprint,
                    options.allow_pickle,
                    accelerator.process_index,
                    self.model,
                    self.settings,
                    self.plan,
                )
                if point is not None:
                    self.resume_dir, self.resume_state, self.resume_rng = point.directory, point.state, point.rng
            elif accelerator.is_main_process and ckpt.list_checkpoints(options.checkpoint_dir):
                # a fresh start must never later resume from an older run's checkpoints
                log.info("starting afresh: removing old checkpoints in %s", options.checkpoint_dir)
                for old in ckpt.list_checkpoints(options.checkpoint_dir):
                    ckpt.discard(old)
            accelerator.wait_for_everyone()
        if self.resume_state is not None:
            restore_model(self.model, self.resume_state)  # before the optimizer: its parameter list must match
        if self.settings.fsdp:  # before the optimizer: it must hold the sharded parameters
            self.model = distributed.shard(self.model, accelerator, options.checkpoint_every_steps)

    def _setup_optimization(self) -> None:
        settings, accelerator, state = self.settings, self.accelerator, self.resume_state
        # The scheduler is not prepared: accelerate's wrapper steps it once per process per call
        # (it assumes single-process step counts), but total_steps already counts this process's
        # optimizer steps — prepared, the schedule would run N× too fast under N processes.
        optimizer, self.scheduler = build_optimization(self.model, settings, self.warmup_steps, self.total_steps)
        if state is not None:
            optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.step, self.start_epoch = state["step"], state["epoch"]
            self.batches_done, self.epoch_losses = state["batches_done"], list(state["epoch_losses"])
            for key, value in state["result"].items():
                setattr(self.result, key, value)
            self.result.resumed_from_step = self.step
            log.info(
                "resuming from %s (step %d, epoch %d, batch %d)",
                self.resume_dir,
                self.step,
                self.start_epoch,
                self.batches_done,
            )
        if settings.gradient_checkpointing:
            enable_gradient_checkpointing(self.model)
        if settings.fsdp:  # sharded already; accelerate would wrap it in DDP
            self.optimizer = accelerator.prepare_optimizer(optimizer)
        else:
            self.model, self.optimizer = accelerator.prepare(self.model, optimizer)
        if settings.compile:
            self.model = torch.compile(self.model)
        if state is not None:
            ckpt.set_rng_state(self.resume_rng)

    # --- epochs --------------------------------------------------------------------------------
    def _train_epoch(self, epoch: int, progress: Any) -> None:
        self.model.train()
        loader = self._train_loader(epoch)
        if self.batches_done:
            loader = self.accelerator.skip_first_batches(loader, self.batches_done)
        for batch in loader:
            if not self._train_step(batch, epoch):
                continue
            # the bar shows the running mean of the last (up to) 20 losses, refreshed every step
            progress.set_postfix(loss=f"{np.mean(self.epoch_losses[-20:]):.4f}", refresh=False)
            progress.update(1)
            if self.options.checkpoint_every_steps and self.step % self.options.checkpoint_every_steps == 0:
                self._save_checkpoint(epoch)
            if self.options.kill_after_step == self.step:
                os.kill(os.getpid(), signal.SIGKILL)

    def _train_step(self, batch: dict, epoch: int) -> bool:
        """One optimizer step, then ASLoRA's merge controller; ``False`` if a non-finite batch was skipped."""
        settings, accelerator, result = self.settings, self.accelerator, self.result
        loss = self.model(**batch).loss
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(self.model.parameters(), settings.max_grad_norm or math.inf)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm is a DTensor
            grad_norm = grad_norm.full_tensor()
        if distributed.any_process(accelerator, ~torch.isfinite(loss.detach()) | ~torch.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            result.skipped_steps += 1
            where = f"after step {self.step} (epoch {epoch}, batch {self.batches_done + 1})"
            last = ckpt.latest_valid(self.options.checkpoint_dir) if self.options.checkpoint_dir else None
            if settings.nonfinite == "error" or result.skipped_steps > settings.max_skipped_steps:
                raise NonFiniteError(
                    f"non-finite loss or gradient {where}"
                    + (
                        f"; {result.skipped_steps} updates skipped, more than train.max_skipped_steps="
                        f"{settings.max_skipped_steps}"
                        if settings.nonfinite == "skip"
                        else ""
                    )
                    + f"; last good checkpoint: {last or 'none'}"
                )
            log.warning("skipping the update of a non-finite batch %s (%d so far)", where, result.skipped_steps)
            self.batches_done += 1
            return False
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.batches_done += 1
        self.epoch_losses.append(loss.item())
        if self.controller is not None:
            events = self.controller.step(self.step)
            distributed.assert_same_on_every_process(
                accelerator, [(e.group, e.kept, e.retired) for e in events], self.step
            )
            if events:  # one key per merge group: ties of two groups at one step must not overwrite
                self.log_metrics(
                    {
                        "aslora/num_B": self.controller.num_distinct_B,
                        **{f"aslora/merge_distance/{e.group}": e.distance for e in events},
                    },
                    self.step,
                )
                for event in events:
                    log.info("%s", describe_tie(event, self.pool))
        if self.step % 10 == 0 or self.step == self.total_steps:
            self.log_metrics(
                {"train/loss": self.epoch_losses[-1], "train/lr": self.scheduler.get_last_lr()[0]}, self.step
            )
        return True

    def _evaluate_epoch(self, epoch: int) -> None:
        data, result = self.data, self.result
        record = {
            "epoch": epoch,
            "step": self.step,
            "train_loss": float(np.mean(self.epoch_losses)) if self.epoch_losses else None,
        }
        record["val"] = self._score("val")
        main = record["val"][data.spec.metrics[0]]
        improved = is_better(data.spec.metrics[0], main, result.best_metric)
        # The test split is scored where validation improves: the reported test score is the one at
        # the best validation epoch. Under train.test_each_epoch it is scored every epoch, so another
        # validation rule (best epoch at the final adapter size) has its test score too; nothing
        # selects on test either way.
        if "test" in self.eval_loaders and (improved or self.settings.test_each_epoch):
            if self.settings.test_each_epoch and data.spec.kind != "causal_lm" and not data.spec.is_regression:
                kept: list[int] = []
                record["test"] = self._score("test", kept)
                self.result.test_predictions[str(epoch)] = encode_classes(kept, self.test_order)
            else:
                record["test"] = self._score("test")
        if self.controller is not None:
            record["num_distinct_B"] = self.controller.num_distinct_B
        # the adapter's size at this epoch's end: which size a score at this epoch was made at
        trained = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        record["adapter_params"] = count_parameters(trained).adapter
        result.epochs.append(record)
        if improved:
            result.best_epoch, result.best_metric, result.best_validation = epoch, main, record["val"]
            result.test_at_best = record.get("test")
            self._keep_best()
        if self.accelerator.is_main_process:
            log.info("%s", describe_epoch(record, self.settings.epochs, data.spec.metrics[0], result))

    def _score(self, split: str, keep: list | None = None) -> dict[str, float]:
        scores = evaluate(self.model, self.eval_loaders[split], self.data, self.accelerator, keep)
        self.log_metrics({f"{split}/{k}": v for k, v in scores.items()}, self.step)
        return scores

    def _keep_best(self) -> None:
        """A CPU copy of what the saved adapter is made of (trainable tensors, the pool's buffers),
        taken at each new best epoch, so the run can save the adapter its reported scores came from."""
        if not self.keeps_adapter:
            return
        trained = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if self.settings.fsdp:  # a collective: every process gathers
            from aslora.integrations.fsdp import full_state

            self.result.best_state = full_state(trained, trainable_state_keys(trained))
        else:
            self.result.best_state = {k: v.detach().cpu().clone() for k, v in trainable_state(trained).items()}
        self.result.params_at_best = count_parameters(trained).as_dict()

    def _save_checkpoint(self, epoch: int) -> None:
        accelerator, options, step = self.accelerator, self.options, self.step
        tmp = options.checkpoint_dir / f".tmp-{ckpt.PREFIX}{step:09d}"
        if accelerator.is_main_process:
            ckpt.begin(options.checkpoint_dir, step)
        accelerator.wait_for_everyone()
        ckpt.write_rng(tmp, accelerator.process_index)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            state = {
                "fingerprint": options.fingerprint,
                "step": step,
                "epoch": epoch,
                "batches_done": self.batches_done,
                "epoch_losses": self.epoch_losses,
                "model": trainable_state(accelerator.unwrap_model(self.model, keep_torch_compile=False)),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "result": {k: getattr(self.result, k) for k in RESUMABLE_FIELDS},
            }
            ckpt.commit(tmp, options.checkpoint_dir, step, state, options.keep_last_checkpoints)
        accelerator.wait_for_everyone()

    # --- finish --------------------------------------------------------------------------------
    def _finish(self, started: float) -> FitResult:
        result = self.result
        # the model itself: no DDP wrapper, no torch.compile wrapper (its head names and state-dict keys)
        trained = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        if self.settings.fsdp:  # gathered on every process (a collective); the caller rebuilds a plain model from it
            from aslora.integrations.fsdp import full_state

            result.final_state = full_state(trained, trainable_state_keys(trained))
        else:
            distributed.assert_parameters_agree(self.accelerator, trained)
        result.train_seconds += time.perf_counter() - started
        result.params_after = count_parameters(trained).as_dict()
        result.merge_history = list(self.pool.merge_history) if self.pool is not None else []
        result.test_labels = self.test_labels if result.test_predictions else None
        return result
