"""The one home of the Hydra glue: resolvers, composition, and reading a group's settings.

``train.py`` (a Hydra app), ``evaluate.py``, the grid preflight, the scripts and the tests all
compose the project's configs through this module, so a run composed anywhere is the run
``python train.py <overrides>`` makes. The library (``aslora/``) never imports Hydra or reads a
config file: it takes plain values, and this module hands them over.

* :func:`register_resolvers` — ``${div:a,b}``, ``${tag:s}``, ``${aslora_default:name}``;
* :func:`compose_run` / :func:`composer` / :func:`resolve_run` — the resolved config of a run;
* :func:`group_config` — one group's resolved settings (``model=minilm-l6`` → its ``model`` section),
  composed like a run's, an unknown name refused with the known ones.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any, Callable, Iterator

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent
CONFIG_DIR = ROOT / "configs"
GROUPS = ("model", "task", "adapter")


def register_resolvers() -> None:
    """``${div:a,b}`` (spread merges over a fraction of the run), ``${tag:s}`` ("_s" or "": the swept
    part of a run name, :func:`short_overrides`) and ``${aslora_default:name}`` (a default of the
    library's ASLoRAConfig). Idempotent."""
    if not OmegaConf.has_resolver("div"):
        OmegaConf.register_new_resolver("div", lambda a, b: float(a) / float(b))
    if not OmegaConf.has_resolver("tag"):
        OmegaConf.register_new_resolver("tag", lambda s: f"_{short_overrides(s)}" if s else "")
    if not OmegaConf.has_resolver("aslora_default"):
        # ${aslora_default:merge_start_fraction} → aslora.adapters.config.DEFAULT_MERGE_START_FRACTION:
        # the library is the one home of its defaults; imported when a config asks, not at start-up
        OmegaConf.register_new_resolver("aslora_default", _library_default)


def short_overrides(dirname: str) -> str:
    """A run name's swept part without the ``adapter.params.`` and ``train.`` prefixes
    (``merge_selection=random,lr=0.001``): a file name holds 255 bytes, and the full keys of a
    few swept settings came within a few of it. The report keeps each key in full (``variant``)."""
    return re.sub(r"(^|,)(?:adapter\.params\.|train\.)", r"\1", dirname)


def current_run_name(report: dict) -> str:
    """The name today's code gives the run a report records: its ``run_name`` with the swept part
    shortened as :func:`short_overrides` does. Runs named before that rule kept the full keys
    (``…_lora_train.lr=0.001_s6``, now ``…_lora_lr=0.001_s6``); a committed grid restored under its
    old names would not be found by the jobs that compose the new ones, and would all run again. The
    swept part is what lies between ``<run_prefix><model>_<task>_<adapter>_`` and ``_s<seed>``; a name
    not of that form (a run named by hand) is kept as it is."""
    name = report["run_name"]
    head = f"{report['config'].get('run_prefix') or ''}{report['model']}_{report['task']}_{report['adapter']}_"
    tail = f"_s{report['seed']}"
    if not (name.startswith(head) and name.endswith(tail)) or len(name) <= len(head) + len(tail):
        return name
    return head + short_overrides(name[len(head) : -len(tail)]) + tail


def _library_default(name: str) -> float:
    from aslora.adapters import config

    value = getattr(config, f"DEFAULT_{name.upper()}", None)
    if value is None:
        raise ValueError(f"${{aslora_default:{name}}}: aslora.adapters.config has no DEFAULT_{name.upper()}")
    return value


def options(group: str) -> list[str]:
    """The names a config group offers (``configs/<group>/*.yaml``)."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_run(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved config ``python train.py <overrides>`` would run, and its group choices."""
    with composer() as compose_one:
        return compose_one(overrides)


@contextlib.contextmanager
def composer() -> Iterator[Callable[[list[str]], tuple[dict[str, Any], dict[str, str]]]]:
    """Compose many runs under one Hydra initialisation; yields :func:`resolve_run`. The grid
    preflight's ``jobs_of`` needs Hydra initialised, as inside a Hydra app."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield resolve_run


def resolve_run(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`compose_run` where Hydra is already initialised: inside :func:`composer`, or inside a
    running Hydra app (the grid preflight composes every job of a grid this way, before job 1)."""
    from hydra import compose
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} resolves as in a real run
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True), choices


def group_config(group: str, name: str) -> dict[str, Any]:
    """The resolved ``group`` section of a run composed with ``group=name`` (and every other group
    at its default), e.g. ``group_config("task", "sst2")["max_length"]``.

    Raises:
        ValueError: ``name`` is not one of the group's options — naming them.
    """
    known = options(group)
    if name not in known:
        raise ValueError(f"unknown {group} {name!r}; known: {known}")
    container, _ = compose_run([f"{group}={name}"])
    return container[group]
