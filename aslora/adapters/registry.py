"""Adapter names, as the configs spell them, to config objects."""

from __future__ import annotations

from typing import Any

from aslora.adapters.config import ASLoRAConfig, FullFinetuneConfig, ShareLoRAConfig, TiedLoRAConfig


def _peft(cls_name: str):
    def build(**params: Any):
        import peft

        return getattr(peft, cls_name)(**params)

    return build


ADAPTERS = {
    "aslora": ASLoRAConfig,
    "sharelora": ShareLoRAConfig,
    "tiedlora": TiedLoRAConfig,
    "full": FullFinetuneConfig,
    "lora": _peft("LoraConfig"),
    "vera": _peft("VeraConfig"),
}


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
