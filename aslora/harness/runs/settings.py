"""Typed settings of one run, built from a plain dict (what Hydra composes, resolved).

The library never imports Hydra: ``train.py`` turns the composed config into a dict and calls
:meth:`RunSettings.from_dict`, which checks everything it can before any model is loaded and
reports every problem at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from aslora.adapters.config import ASLoRAConfig
from aslora.adapters.registry import ADAPTERS, SHARED_A, build_adapter_config
from aslora.harness.inputs.data import TASKS
from aslora.harness.inputs.models import ModelSpec, split_model_config
from aslora.harness.runs.plan import RunPlan, make_plan, world_size
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.state.checkpoint import CheckpointSettings

MAX_RUN_NAME_BYTES = 250
"""A run name's limit: a file name holds 255 bytes, and results/reports/<run>.json adds 5."""
WANDB_MODES = ("disabled", "offline", "online")
_TOP_LEVEL_KEYS = {
    "run_name",
    "run_prefix",
    "seed",
    "hub",
    "overwrite",
    "experiments_dir",
    "reference_lora_rank",
    "model",
    "task",
    "adapter",
    "train",
    "wandb",
    "checkpoint",
    "resume",
    "validate_only",
    "kill_after_step",
    "init_adapter_from",
    "metrics_csv",
}
_OPTIONAL_TOP_LEVEL = (
    "experiments_dir",
    "reference_lora_rank",
    "hub",
    "overwrite",
    "resume",
    "validate_only",
    "kill_after_step",
    "init_adapter_from",
    "metrics_csv",
)


@dataclass(frozen=True)
class TaskSettings:
    name: str
    max_length: int
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    split_seed: int = 0
    local_dir: str | None = None
    recipe_model: str | None = None
    """The model the task's training recipe (lr, epochs, length) was published or chosen for."""

    def __post_init__(self) -> None:
        problems = [] if self.name in TASKS else [f"unknown task {self.name!r}; known tasks: {sorted(TASKS)}"]
        for key in ("max_length", "max_train_examples", "max_eval_examples"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                problems.append(f"task.{key}={value!r} must be a positive integer")
        _raise(problems)


@dataclass(frozen=True)
class AdapterSettings:
    """``adapter.name`` and ``adapter.params``, and the adapter config built from them once
    (``config``: what the plan resolves the merge schedule from and ``apply_adapter`` injects)."""

    name: str
    params: dict[str, Any]
    config: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.name not in ADAPTERS:
            raise ValueError(f"unknown adapter {self.name!r}; known adapters: {sorted(ADAPTERS)}")
        try:
            config = build_adapter_config(self.name, dict(self.params))
        except (TypeError, ValueError) as error:
            raise ValueError(f"adapter.params: {error}") from None
        _raise(_merge_group_problems(config))
        object.__setattr__(self, "config", config)


@dataclass(frozen=True)
class WandbSettings:
    mode: str = "disabled"
    project: str = "aslora"
    entity: str | None = None
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ValueError(f"wandb.mode={self.mode!r} must be one of {list(WANDB_MODES)}")
        if not isinstance(self.tags, (list, tuple)) or not all(isinstance(t, str) for t in self.tags):
            raise ValueError(f"wandb.tags={self.tags!r} must be a list of strings")
        object.__setattr__(self, "tags", tuple(self.tags))  # the config's list, the default's tuple: one value


@dataclass(frozen=True)
class RunSettings:
    run_name: str
    seed: int
    model: ModelSpec
    target_modules: tuple[str, ...] | str
    task: TaskSettings
    adapter: AdapterSettings
    train: TrainSettings
    experiments_dir: str = "experiments"
    reference_lora_rank: int = 8
    hub: bool = False
    overwrite: bool = False
    wandb: WandbSettings = WandbSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()
    resume: bool = False
    validate_only: bool = False
    kill_after_step: int | None = None
    """Fault injection for the resume tests: SIGKILL the run right after this optimizer step."""
    init_adapter_from: str | None = None
    """A finished ``lora`` run's ``adapter/`` directory whose A and B this run starts from (its head
    stays fresh): the LoRA paper's MNLI initialisation for MRPC, RTE and STS-B."""
    choices: dict[str, str] | None = None
    """Which option of each config group was composed (for the report)."""
    metrics_csv: bool = True
    """Also write every logged value to ``<run dir>/metrics.csv``."""

    @property
    def run_dir(self) -> Path:
        return Path(self.experiments_dir) / self.run_name

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def report_path(self) -> Path:
        return self.run_dir / "report.json"

    def fingerprint(self) -> str:
        """SHA-256 of what decides a run's numbers — model, task, adapter, training settings (less the
        progress bar), seed — written into every checkpoint, so a resume never continues another run."""

        train = {k: v for k, v in asdict(self.train).items() if k != "progress_bar"}
        identity = {
            "model": asdict(self.model),
            "task": asdict(self.task),
            "adapter": {"name": self.adapter.name, "params": self.adapter.params},
            "train": train,
            "seed": self.seed,
            "target_modules": self.target_modules,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()

    def adapter_config(self) -> object:
        """The adapter config, built once when the settings were (``AdapterSettings.config``)."""
        return self.adapter.config

    def plan(self, num_train_examples: int | None = None, num_processes: int | None = None) -> RunPlan:
        """The run's one plan (``aslora/harness/runs/plan.py``): steps per process, warm-up, merge steps and the
        adapter config. ``num_train_examples`` defaults to the task's published train size, capped by
        ``task.max_train_examples`` (so it can be checked before any data loads); ``num_processes`` to
        this launch's ``WORLD_SIZE``. Raises ``ValueError`` for a merge schedule that cannot work."""
        if num_train_examples is None:
            num_train_examples = TASKS[self.task.name].train_size
            if self.task.max_train_examples is not None:
                num_train_examples = min(num_train_examples, self.task.max_train_examples)
        return make_plan(self, num_train_examples, num_processes)

    @classmethod
    def from_dict(cls, data: dict[str, Any], choices: dict[str, str] | None = None) -> "RunSettings":
        """Bind each section (every one validates itself: ``TaskSettings``, ``AdapterSettings``,
        ``TrainSettings``, …), check the run's own keys and the rules that span sections, and raise
        one ``ValueError`` listing every problem."""
        problems: list[str] = []

        def section(kind: type, source: Any, prefix: str):
            if not isinstance(source, dict):
                problems.append(f"{prefix} must be a mapping, got {source!r}")
                return None
            known = {f.name for f in fields(kind) if f.init}
            unknown = sorted(set(source) - known)
            if unknown:
                problems.append(f"unknown key(s) {unknown} under {prefix}; known: {sorted(known)}")
            try:
                return kind(**{k: v for k, v in source.items() if k in known})
            except (TypeError, ValueError) as error:
                problems.append(str(error) if str(error).startswith(prefix) else f"{prefix}: {error}")
                return None

        # aslora_max_merges is consumed by the aslora adapter config's interpolation
        model_data, adapter_keys = split_model_config(dict(data.get("model") or {}))
        target_modules = adapter_keys.get("target_modules")
        if not target_modules:
            problems.append(f"model.target_modules={target_modules!r} must name the modules to adapt")
        model = section(ModelSpec, model_data, "model")
        task = section(TaskSettings, data.get("task"), "task")
        train = section(TrainSettings, {**(data.get("train") or {}), "seed": data.get("seed")}, "train")
        adapter_data = data.get("adapter") or {}
        for key in sorted(set(adapter_data) - {"name", "params"}):  # e.g. Hydra's hint +adapter.<key>=…
            problems.append(
                f"unknown key adapter.{key}: the run reads only adapter.name and adapter.params.*; "
                f"did you mean adapter.params.{key}={adapter_data[key]!r}?"
            )
        adapter_data = {"name": adapter_data.get("name"), "params": dict(adapter_data.get("params") or {})}
        adapter = section(AdapterSettings, adapter_data, "adapter")
        wandb = section(WandbSettings, data.get("wandb", {}), "wandb")
        checkpoint = section(CheckpointSettings, data.get("checkpoint", {}), "checkpoint")
        problems += _run_problems(data)
        problems += _spanning_problems(model, task, adapter, train, checkpoint)
        _raise(problems, "invalid run configuration:\n  - ", "\n  - ")
        # a top-level key left out takes the dataclass's default, the one home of every default
        # (tests/test_configs.py holds them equal to configs/train.yaml's)
        optional = {key: data[key] for key in _OPTIONAL_TOP_LEVEL if key in data}
        if "experiments_dir" in optional:
            optional["experiments_dir"] = str(optional["experiments_dir"])
        return cls(
            run_name=data["run_name"],
            seed=data["seed"],
            model=model,
            target_modules=target_modules if isinstance(target_modules, str) else tuple(target_modules),
            task=task,
            adapter=adapter,
            train=train,
            wandb=wandb,
            choices=choices,
            checkpoint=checkpoint,
            **optional,
        )


def _raise(problems: list[str], head: str = "", sep: str = "; ") -> None:
    if problems:
        raise ValueError(head + sep.join(problems) if head else sep.join(problems))


def _run_problems(data: dict[str, Any]) -> list[str]:
    """The run's own top-level keys: name, seed, flags, fault injection, LoRA's MNLI initialisation."""
    problems = []
    unknown_top = sorted(set(data) - _TOP_LEVEL_KEYS)
    if unknown_top:
        problems.append(f"unknown top-level key(s) {unknown_top}; known: {sorted(_TOP_LEVEL_KEYS)}")
    seed = data.get("seed")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        problems.append(f"seed={seed!r} must be a non-negative integer")
    run_name = data.get("run_name")
    if not isinstance(run_name, str) or not run_name or "/" in run_name or run_name.startswith("."):
        problems.append(f"run_name={run_name!r} must be a non-empty name without '/'")
    elif len(run_name.encode()) > MAX_RUN_NAME_BYTES or not run_name.isprintable():
        problems.append(
            f"run_name={run_name[:60]!r}… ({len(run_name.encode())} bytes) must be printable and at most "
            f"{MAX_RUN_NAME_BYTES} bytes (a file name holds 255; results/reports/<run>.json adds 5): set a "
            f"shorter run_name (or run_prefix)"
        )
    rank = data.get("reference_lora_rank", 8)
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        problems.append(f"reference_lora_rank={rank!r} must be a positive integer")
    if not isinstance(data.get("experiments_dir", ""), (str, Path)):
        problems.append(f"experiments_dir={data.get('experiments_dir')!r} must be a directory path")
    for flag in ("hub", "overwrite", "resume", "validate_only", "metrics_csv"):
        if not isinstance(data.get(flag, False), bool):
            problems.append(f"{flag}={data.get(flag)!r} must be true or false")
    kill_after_step = data.get("kill_after_step")
    if kill_after_step is not None and (not isinstance(kill_after_step, int) or kill_after_step <= 0):
        problems.append(f"kill_after_step={kill_after_step!r} must be a positive integer or null")
    init_adapter_from = data.get("init_adapter_from")
    if init_adapter_from is not None:
        if not isinstance(init_adapter_from, str) or not init_adapter_from:
            problems.append(f"init_adapter_from={init_adapter_from!r} must be a directory path or null")
        elif (data.get("adapter") or {}).get("name") != "lora":
            problems.append(
                f"init_adapter_from is for adapter=lora (LoRA's MNLI initialisation); "
                f"adapter={(data.get('adapter') or {}).get('name')!r}"
            )
    return problems


def _spanning_problems(model, task, adapter, train, checkpoint) -> list[str]:
    """The rules that join sections (a section that failed its own checks is ``None`` and skipped)."""
    problems = []
    if (
        model is not None
        and task is not None
        and TASKS[task.name].kind == "causal_lm"
        and model.architecture != "decoder"
    ):
        problems.append(
            f"task {task.name!r} is instruction tuning and needs a decoder model; model "
            f"{model.name!r} is an {model.architecture} (use model=smollm2-135m, or llama-2-7b with hub=true)"
        )
    if train is None:
        return problems
    if adapter is not None and train.shared_a_lr is not None and adapter.name not in SHARED_A:
        problems.append(
            f"train.shared_a_lr={train.shared_a_lr!r} is for adapters with a shared A "
            f"({', '.join(SHARED_A)}); adapter={adapter.name!r} has none"
        )
    if train.fsdp:
        if world_size() < 2:
            problems.append(
                "train.fsdp=true shards over several processes; this is one process "
                "(launch with accelerate launch --num_processes N train.py …, or torchrun)"
            )
        if checkpoint is not None and checkpoint.every_steps:
            problems.append(
                "train.fsdp=true with checkpoint.every_steps: sharded checkpoints are not supported "
                "yet; use DDP (train.fsdp=false) for resumable runs"
            )
    if train.test_each_epoch and world_size() > 1:
        # each process scores a shard; the predictions' order back to the dataset's is one process's
        problems.append(
            "train.test_each_epoch=true keeps per-example predictions in one process only; "
            f"this launch has {world_size()} (set train.test_each_epoch=false, or run on one device)"
        )
    return problems


def _merge_group_problems(config: object) -> list[str]:
    """A per-group ``max_merges`` must name the merge groups the targets make — checkable before
    loading when targets are listed by name and groups are module types (a regex waits for the model)."""
    if not isinstance(config, ASLoRAConfig) or not isinstance(config.max_merges, dict):
        return []
    if isinstance(config.target_modules, str) or config.merge_scope != "per_module":
        return []
    groups = {t.rsplit(".", 1)[-1] for t in config.target_modules}
    if set(config.max_merges) == groups:
        return []
    return [
        f"adapter.params.max_merges={config.max_merges!r} must give a cap for each merge group, "
        f"which are the module types {sorted(groups)}"
    ]
