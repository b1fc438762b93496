"""The adapters, one row each: the name the configs use, the name tables and figures show, the
config that builds it, whether it has a shared A, and its colour in figures. Everything that lists
adapters — the run settings, the tables, the protocol's figure — reads this table (PEFT's
``register_peft_method`` idea), so a new adapter is one row here plus its ``configs/adapter/`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from aslora.adapters.config import ASLoRAConfig, FullFinetuneConfig, ShareLoRAConfig, TiedLoRAConfig


def _peft(cls_name: str) -> Callable[..., Any]:
    def build(**params: Any):
        import peft

        return getattr(peft, cls_name)(**params)

    return build


@dataclass(frozen=True)
class AdapterSpec:
    name: str
    """As the configs spell it (``adapter=aslora``) and reports record it."""
    display: str
    """As tables and figures show it."""
    build: Callable[..., Any]
    """Its config from ``adapter.params``."""
    shared_a: bool
    """One A shared across layers (``train.shared_a_lr`` applies)."""
    colour: str | None
    """Its colour in figures (``None``: not drawn, e.g. full fine-tuning)."""


SPECS = (  # the order of tables and legends
    AdapterSpec("full", "Full FT", FullFinetuneConfig, shared_a=False, colour=None),
    AdapterSpec("lora", "LoRA", _peft("LoraConfig"), shared_a=False, colour="tab:blue"),
    AdapterSpec("vera", "VeRA", _peft("VeraConfig"), shared_a=False, colour="tab:green"),
    AdapterSpec("tiedlora", "Tied-LoRA", TiedLoRAConfig, shared_a=True, colour="tab:purple"),
    AdapterSpec("sharelora", "ShareLoRA", ShareLoRAConfig, shared_a=True, colour="tab:brown"),
    AdapterSpec("aslora", "ASLoRA", ASLoRAConfig, shared_a=True, colour="tab:red"),
)
ADAPTERS = {spec.name: spec.build for spec in SPECS}
ORDER = [spec.name for spec in SPECS]
DISPLAY_NAMES = {spec.name: spec.display for spec in SPECS}
COLOURS = {spec.name: spec.colour for spec in SPECS if spec.colour}
SHARED_A = sorted(spec.name for spec in SPECS if spec.shared_a)


def build_adapter_config(name: str, params: dict[str, Any]) -> object:
    """``build_adapter_config("aslora", {"r": 8, ...})`` → ``ASLoRAConfig(r=8, ...)``.

    Raises:
        ValueError: an unknown adapter name, an unknown parameter, or a bad value.
    """
    if name not in ADAPTERS:
        raise ValueError(f"unknown adapter {name!r}; known adapters: {sorted(ADAPTERS)}")
    try:
        return ADAPTERS[name](**params)
    except TypeError as error:  # an unexpected keyword: name it as a config problem
        raise ValueError(f"adapter {name!r}: {error}") from error
