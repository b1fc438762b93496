"""ASLoRA, ShareLoRA and Tied-LoRA as PEFT methods: ``peft.get_peft_model(model, ASLoRAConfig(...))``.

    model = peft.get_peft_model(base, aslora.ASLoRAConfig(r=8, task_type="SEQ_CLS", ...))
    model.add_adapter("other", aslora.ASLoRAConfig(...))   # several adapters: own pools, own ties
    model.print_trainable_parameters()      # live parameters: retired B's are not counted
    with model.disable_adapter(): ...       # the base model (DPO's reference pass)
    model.merge_adapter(); model.unmerge_adapter()
    model.save_pretrained(dir)              # adapter_config.json + adapter_model.safetensors
    model = peft.PeftModel.from_pretrained(base, dir)   # the same adapter, layer→B map and history
    merged = model.merge_and_unload()       # a plain transformers model

The tuner is PEFT's own ``BaseTuner``: PEFT matches the targets, injects, wires ``modules_to_save``,
sets what trains, and saves and loads through the hooks below. Our layers and the pools' container
are ``BaseTunerLayer``s (``aslora/adapters/layers.py``, ``pools.py``), so everything in PEFT that
walks tuner layers works on them. What is ours: the pool of an adapter is built before PEFT injects
it (its slots need every target at once: depths, the A per input width); the saved state holds the
live B's only; and loading gives the retired B's (which no layer reads) zeros.

The way in is not a public API: PEFT's ``register_peft_method`` only accepts names already in its
``PeftType`` enum, which has no ``ASLORA``. PEFT looks methods up in plain dicts keyed by
``peft_type``, and :func:`register` writes our three types into them. ``pyproject.toml`` pins PEFT to
the tested range; PEFT's own generic tuner tests run against our tuners in CI
(``tests/aslora/integrations/test_peft_suite.py``), so a PEFT release that moves these tables fails loudly.

Shared state. Like VeRA, our tuner declares ``uses_shared_state``: the shared A, the layer→B map and
the merge history belong to the whole model, so ``peft.inject_adapter_in_model`` — and through it
transformers' adapter API, ``model.load_adapter(dir)`` and ``AutoModel…from_pretrained(adapter_dir)``
— refuse our adapters before anything is loaded; ``peft.PeftModel.from_pretrained(model, dir)`` loads them.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTuner, _ExcludedModule, _maybe_include_all_linear_layers
from torch import nn

from aslora.adapters.config import PEFT_TYPE_NAMES, ASLoRAConfig, SharedLoRAConfig, ShareLoRAConfig, TiedLoRAConfig
from aslora.adapters.inject import adapt_layer, base_linear, create_pool, require_linear, resolve_targets
from aslora.adapters.pools import POOL_ATTRIBUTE, POOL_DICT, SharedLoRATunerLayer, find_pools

SUPPORTED_PEFT = ("0.21",)
"""PEFT minor versions this module is tested against (``pyproject.toml`` pins the same)."""
_PER_B = ("lora_B", "running_mean_B")
"""Pool tensors held per B: a saved adapter holds the live ones only."""


class SharedLoRATuner(BaseTuner):
    """PEFT's tuner for our shared-pool adapters (one pool per adapter name)."""

    prefix = POOL_DICT
    tuner_layer_cls = SharedLoRATunerLayer
    target_module_mapping: dict[str, list[str]] = {}
    uses_shared_state = True

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        # PEFT matches and injects one module at a time; the pool needs all targets first (slot
        # depths, one A per input width), so it is built here with PEFT's own matching rule.
        # state_dict is not passed on: PEFT would read module names off its keys, and ours live
        # in the pool (the config says what to adapt).
        config = _maybe_include_all_linear_layers(resolve_targets(self.peft_config[adapter_name], model), model)
        self.peft_config[adapter_name] = config
        first = not any(isinstance(m, SharedLoRATunerLayer) for m in model.modules())
        targets = self._targets(model, config)
        if targets:
            # in the base model's dtype, as PEFT creates LoRA's: PeftModel then upcasts to float32
            # unless autocast_adapter_dtype=False
            weight = base_linear(targets[0][1]).weight
            create_pool(
                model, config, adapter_name, targets, dtype=weight.dtype if weight.is_floating_point() else None
            )
        try:
            super().inject_adapter(
                model, adapter_name, autocast_adapter_dtype=autocast_adapter_dtype, low_cpu_mem_usage=low_cpu_mem_usage
            )
        except Exception:
            pools = find_pools(model)
            if pools is not None and adapter_name in pools.aslora_pool:
                del pools.aslora_pool[adapter_name]
            raise
        if first:
            # PEFT restores the trainability of what was there before a *further* adapter, and the
            # pool (a tuner layer) was there before its injection: the first adapter freezes the base
            self._mark_only_adapters_as_trainable(model)

    def _targets(self, model: nn.Module, config: SharedLoRAConfig) -> list[tuple[str, nn.Module]]:
        """What PEFT's ``inject_adapter`` will hand to ``_create_and_replace``, in the same order."""
        inside: list[str] = []  # modules of existing tuner layers are not targets (PEFT's rule)
        targets = []
        for key, module in model.named_modules():
            if not key or any(key.startswith(prefix) for prefix in inside):
                continue
            if isinstance(module, SharedLoRATunerLayer):
                inside.append(key + ".")
            match = self._check_target_module_exists(config, key)
            if not match or isinstance(match, _ExcludedModule):
                continue
            require_linear(key, module)
            targets.append((key, module))
        return targets

    def _create_and_replace(
        self,
        config: SharedLoRAConfig,
        adapter_name: str,
        target: nn.Module,
        target_name: str,
        parent: nn.Module,
        current_key: str,
        **kwargs: Any,
    ) -> None:
        pools = find_pools(self.model)
        slot = pools.aslora_pool[adapter_name].slot_of_module[current_key]
        adapt_layer(pools, adapter_name, slot, target, parent, target_name)  # PEFT sets the active adapter after

    def _prepare_adapter_config(self, peft_config: SharedLoRAConfig, model_config: dict) -> SharedLoRAConfig:
        return peft_config  # target_modules=None was resolved in inject_adapter (resolve_targets)

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        # PEFT merges and unwraps every adapted layer (they read the pools, so these go last)
        model = super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )
        if POOL_ATTRIBUTE in model._modules:
            del model._modules[POOL_ATTRIBUTE]
        return model

    # -------------------------------------------------------------------------------------------
    # the adapter's state dict (PEFT >= 0.21 delegates both directions to the tuner class)
    @classmethod
    def _get_adapter_state_dict(
        cls,
        model: nn.Module,
        config: SharedLoRAConfig,
        adapter_name: str,
        state_dict: dict[str, torch.Tensor],
        unwanted_adapter_names: list[str],
    ) -> dict[str, torch.Tensor]:
        """This adapter's pool, with the B's (and their running means) that some layer reads."""
        pool = find_pools(model).aslora_pool[adapter_name]
        live = set(pool.live_B_names())
        marker = f".{POOL_DICT}.{adapter_name}."
        out = {}
        for key, value in (
            super()._get_adapter_state_dict(model, config, adapter_name, state_dict, unwanted_adapter_names).items()
        ):
            if marker not in f".{key}":
                continue  # another adapter's pool (or a layer's dropout: no tensors)
            kind, _, b_name = key.split(marker, 1)[-1].partition(".")
            if kind in _PER_B and b_name not in live:
                continue
            out[key] = value
        return out

    @classmethod
    def _remove_adapter_name_from_key(cls, key: str, adapter_name: str) -> str:
        """``…aslora_pool.<adapter>.lora_B.query_3`` → ``…aslora_pool.lora_B.query_3``."""
        marker = f".{POOL_DICT}.{adapter_name}."
        if marker in f".{key}":
            return f".{key}".replace(marker, f".{POOL_DICT}.", 1)[1:]
        return super()._remove_adapter_name_from_key(key, adapter_name)

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: SharedLoRAConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Key the saved pool as the model does, and give each retired B (not saved: no layer reads
        it) and its running mean zeros, so that every pool tensor is real after loading — also
        under ``low_cpu_mem_usage``, which assigns the loaded tensors in place of the model's."""
        out = super()._remap_adapter_state_dict_for_load(model, config, adapter_name, state_dict)
        marker = f".{POOL_DICT}.{adapter_name}."
        for key, value in model.state_dict().items():
            if marker not in f".{key}" or key in out:
                continue
            kind = key.split(marker, 1)[-1].partition(".")[0]
            if kind in _PER_B:
                out[key] = torch.zeros(value.shape, dtype=value.dtype, device="cpu" if value.is_meta else value.device)
        return out


def _live_trainable_parameters(self: PeftModel) -> tuple[int, int]:
    """``PeftModel.get_nb_trainable_parameters`` for a model with our pools: a retired B counts 0
    (what ``print_trainable_parameters`` shows); other PEFT models are unchanged."""
    trainable, total = _ORIGINAL_COUNT(self)
    pools = find_pools(self)
    if pools is None:
        return trainable, total
    for pool in pools.aslora_pool.values():
        live = pool.live_numel()
        retired = [p for p in pool.parameters() if live[id(p)] < p.numel()]
        total -= sum(p.numel() for p in retired)
        trainable -= sum(p.numel() for p in retired if p.requires_grad)
    return trainable, total


_ORIGINAL_COUNT = PeftModel.get_nb_trainable_parameters


def register() -> None:
    """Make PEFT know ASLORA, SHARELORA and TIEDLORA (idempotent; ``import aslora`` calls it)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if not peft.__version__.startswith(SUPPORTED_PEFT):
        warnings.warn(
            f"aslora's PEFT integration is tested with PEFT {SUPPORTED_PEFT}; this is {peft.__version__}. "
            f"Run tests/aslora/integrations/ before trusting saved adapters.",
            stacklevel=2,
        )
    for cls in (ASLoRAConfig, ShareLoRAConfig, TiedLoRAConfig):
        name = PEFT_TYPE_NAMES[cls.__name__]
        PEFT_TYPE_TO_CONFIG_MAPPING[name] = cls
        PEFT_TYPE_TO_TUNER_MAPPING[name] = SharedLoRATuner
        PEFT_TYPE_TO_PREFIX_MAPPING[name] = POOL_DICT
    PeftModel.get_nb_trainable_parameters = _live_trainable_parameters
