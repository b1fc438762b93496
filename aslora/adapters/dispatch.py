"""One entry point for every adapter of the comparison.

* ``ASLoRAConfig`` / ``ShareLoRAConfig`` / ``TiedLoRAConfig`` → our shared-pool injection;
* ``peft.LoraConfig`` / ``peft.VeraConfig`` → PEFT, the reference implementations of the baselines;
* ``FullFinetuneConfig`` → every parameter trains.

In every case the base model is frozen except for the task head (``classifier`` / ``score``),
which trains, as in every GLUE PEFT paper.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

from torch import nn

from aslora.adapters.config import FullFinetuneConfig, SharedLoRAConfig
from aslora.adapters.inject import DEFAULT_HEAD_MODULES, find_head_modules, inject_shared_lora

HEAD_NAMES_ATTRIBUTE = "aslora_head_modules"


def apply_adapter(
    model: nn.Module,
    config: object,
    head_modules: Sequence[str] = DEFAULT_HEAD_MODULES,
) -> nn.Module:
    """Adapt ``model`` in place (ours) or wrap it (PEFT); return the model to train.

    Args:
        model: a ``transformers`` model (or any ``nn.Module`` with ``nn.Linear`` projections).
        config: one of the configs above.
        head_modules: suffixes of the task-head modules that stay trainable.

    Raises:
        ValueError: an unknown config type, or a config that does not fit the model.
    """
    if isinstance(config, SharedLoRAConfig) and config.modules_to_save:
        head_modules = config.modules_to_save  # PEFT's name for the modules that train whole
    head_names = find_head_modules(model, head_modules)
    if isinstance(config, FullFinetuneConfig):
        model.requires_grad_(True)
        _remember_head(model, head_names)
        return model
    if isinstance(config, SharedLoRAConfig):
        pool = inject_shared_lora(model, config, head_names)  # validates before it changes anything
        model.requires_grad_(False)
        pool.requires_grad_(True)
        for name in head_names:
            model.get_submodule(name).requires_grad_(True)
        _remember_head(model, head_names)
        return model
    peft_types = _peft_config_types()
    if isinstance(config, peft_types):
        import peft

        if config.modules_to_save is None and head_names:
            # PEFT trains the head only when told; name it, as task_type=SEQ_CLS would.
            config = dataclasses.replace(config, modules_to_save=[n.rsplit(".", 1)[-1] for n in head_names])
        with warnings.catch_warnings():
            # PEFT 0.21 reads `is_gradient_checkpointing`, which transformers 5 deprecates with a
            # FutureWarning on every adapted model; it says nothing to the user of either library
            warnings.filterwarnings(
                "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
            )
            adapted = peft.get_peft_model(model, config)
        _remember_head(adapted, [n.rsplit(".", 1)[-1] for n in head_names])
        return adapted
    raise ValueError(
        f"unknown adapter config {type(config).__name__}; expected ASLoRAConfig, ShareLoRAConfig, "
        f"TiedLoRAConfig, FullFinetuneConfig, peft.LoraConfig or peft.VeraConfig"
    )


def head_module_names(model: nn.Module) -> list[str]:
    """The head names recorded by :func:`apply_adapter`; for a model wrapped by
    ``peft.get_peft_model`` directly, its config's ``modules_to_save``; else none."""
    if HEAD_NAMES_ATTRIBUTE in model.__dict__:
        return list(model.__dict__[HEAD_NAMES_ATTRIBUTE])
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        return list(getattr(next(iter(peft_config.values())), "modules_to_save", None) or ())
    return []


def is_head_parameter(parameter_name: str, head_names: Sequence[str]) -> bool:
    """Whether a parameter belongs to the task head (also inside PEFT's ``modules_to_save``)."""
    return any(f".{h}." in f".{parameter_name}" for h in head_names)


def _remember_head(model: nn.Module, head_names: Sequence[str]) -> None:
    # a plain attribute, not config: counting and saving need to know what the head is
    model.__dict__[HEAD_NAMES_ATTRIBUTE] = tuple(head_names)


def _peft_config_types() -> tuple[type, ...]:
    import peft

    return (peft.LoraConfig, peft.VeraConfig)
