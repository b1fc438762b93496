"""The adapters, one row each: the name the configs use, the config that builds it, and whether it
has a shared A. The run settings and the optimizer read this table (PEFT's ``register_peft_method``
idea), so a new adapter is one row here plus its ``configs/adapter/`` file — and, to be shown in
tables and figures, its name and colour in ``aslora/harness/measuring/display.py``.
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
    build: Callable[..., Any]
    """Its config from ``adapter.params``."""
    shared_a: bool
    """One A shared across layers (``train.shared_a_lr`` applies)."""


SPECS = (
    AdapterSpec("full", FullFinetuneConfig, shared_a=False),
    AdapterSpec("lora", _peft("LoraConfig"), shared_a=False),
    AdapterSpec("vera", _peft("VeraConfig"), shared_a=False),
    AdapterSpec("tiedlora", TiedLoRAConfig, shared_a=True),
    AdapterSpec("sharelora", ShareLoRAConfig, shared_a=True),
    AdapterSpec("aslora", ASLoRAConfig, shared_a=True),
)
ADAPTERS = {spec.name: spec.build for spec in SPECS}
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
