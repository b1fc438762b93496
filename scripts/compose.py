"""Compose the project's Hydra configs outside a Hydra run (tests, scripts), exactly as train.py would."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
GROUPS = ("model", "task", "adapter")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def compose_run(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The resolved config ``python train.py <overrides>`` would run, and its group choices."""
    with composer() as compose_one:
        return compose_one(overrides)


@contextlib.contextmanager
def composer() -> Iterator[Callable[[list[str]], tuple[dict[str, Any], dict[str, str]]]]:
    """Compose many runs under one Hydra initialisation; yields :func:`resolve_run`. The grid
    preflight's ``jobs_of`` needs Hydra initialised, as inside a Hydra app."""
    import train  # registers the resolvers

    train.register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield resolve_run


def resolve_run(overrides: list[str]) -> tuple[dict[str, Any], dict[str, str]]:
    """:func:`compose_run` where Hydra is already initialised: inside :func:`composer`, or inside a
    running Hydra app (the grid preflight composes every job of a grid this way, before job 1)."""
    cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # so ${hydra:...} resolves as in a real run
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True), choices
