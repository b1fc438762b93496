"""ASLoRA, ShareLoRA and Tied-LoRA as PEFT methods: ``peft.get_peft_model(model, ASLoRAConfig(...))``.

    model = peft.get_peft_model(base, aslora.ASLoRAConfig(r=8, task_type="SEQ_CLS", ...))
    model.print_trainable_parameters()      # live parameters: retired B rows are not counted
    model.save_pretrained(dir)              # adapter_config.json + adapter_model.safetensors
    model = peft.PeftModel.from_pretrained(base, dir)   # the same adapter, layer→B map and history
    merged = model.merge_and_unload()       # a plain transformers model

Everything PEFT-specific lives here, in one module, because the way in is not a public API:
PEFT's ``register_peft_method`` only accepts names already in its ``PeftType`` enum, which has no
``ASLORA``. PEFT looks methods up in plain dicts keyed by ``peft_type`` (a ``str`` enum, so a
plain string key works), and since 0.21 delegates the adapter's state dict to classmethods of
the tuner; :func:`register` writes our three types into those dicts. ``pyproject.toml`` pins PEFT
to the tested range, and ``tests/aslora/integrations/test_integrations.py`` runs get → train → save → load →
merge on every change, so a PEFT release that moves these tables fails loudly there.

The saved adapter holds each bank's live rows only (plus their row indices), so it stays under
25 % of LoRA's; loading writes them back into full-size banks and restores the layer→B map, the
merge log and the running means — enough for a Trainer to resume a run bit for bit.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from peft import PeftModel
from peft.tuners.tuners_utils import BaseTuner
from torch import nn

from aslora.adapters.config import ASLoRAConfig, PEFT_TYPE_NAMES, SharedLoRAConfig, ShareLoRAConfig, TiedLoRAConfig
from aslora.adapters.fold import merge_into_base, remove_adapter
from aslora.adapters.inject import inject_shared_lora
from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pool import POOL_ATTRIBUTE, find_pool

SUPPORTED_PEFT = ("0.21",)
"""PEFT minor versions this module is tested against (``pyproject.toml`` pins the same)."""
_LIVE_ROWS = "live_rows"
_BANKED = ("lora_B", "running_mean_B")


class SharedLoRATuner(BaseTuner):
    """PEFT's tuner for our shared-pool adapters: injection, trainability, enable/disable,
    merge/unload and the adapter's state dict, all through the pool that ``apply_adapter`` uses."""

    prefix = POOL_ATTRIBUTE
    tuner_layer_cls = SharedLoRALinear
    target_module_mapping: dict[str, list[str]] = {}

    def inject_adapter(
        self,
        model: nn.Module,
        adapter_name: str,
        autocast_adapter_dtype: bool = True,
        low_cpu_mem_usage: bool = False,
        state_dict: dict[str, torch.Tensor] | None = None,
    ) -> None:
        config = self.peft_config[adapter_name]
        self._check_new_adapter_config(config)
        inject_shared_lora(model, config, head_names=[])
        self._mark_only_adapters_as_trainable(model)
        if config.inference_mode:
            find_pool(model).requires_grad_(False)

    def _create_and_replace(self, *args: Any, **kwargs: Any) -> None:  # inject_adapter does it all at once
        raise NotImplementedError("shared-pool adapters are injected model-wide by inject_adapter")

    def _check_new_adapter_config(self, config: SharedLoRAConfig) -> None:
        if len(self.peft_config) > 1:
            raise ValueError(
                f"{type(self).__name__} supports one adapter per model; this one has {sorted(self.peft_config)}"
            )

    def _prepare_adapter_config(self, peft_config: SharedLoRAConfig, model_config: dict) -> SharedLoRAConfig:
        return peft_config

    def _mark_only_adapters_as_trainable(self, model: nn.Module) -> None:
        model.requires_grad_(False)
        find_pool(model).requires_grad_(True)

    def _enable_adapter_layers(self, enabled: bool = True) -> None:
        super()._enable_adapter_layers(enabled)  # PEFT's own wrappers (modules_to_save)
        for module in self.model.modules():
            if isinstance(module, SharedLoRALinear):
                module.adapter_enabled = enabled

    def set_adapter(self, adapter_name: str | list[str], inference_mode: bool = False) -> None:
        if adapter_name not in (self.active_adapter, [self.active_adapter]):
            raise ValueError(f"{type(self).__name__} holds one adapter, {self.active_adapter!r}; got {adapter_name!r}")

    def _unload_and_optionally_merge(
        self,
        merge: bool = True,
        progressbar: bool = False,
        safe_merge: bool = False,
        adapter_names: list[str] | None = None,
    ) -> nn.Module:
        # ours first (atomic: a non-finite fold changes nothing), then PEFT unwraps its modules_to_save
        if merge:
            merge_into_base(self.model)
        else:
            remove_adapter(self.model)
        return super()._unload_and_optionally_merge(
            merge=merge, progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names
        )

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
        """Every tensor of the pool — banks reduced to their live rows, with ``live_rows.<bank>``."""
        pool = find_pool(model)
        live = pool.live_rows()
        out = {}
        for key, value in state_dict.items():
            name = _pool_key(key)
            if name is None:
                continue
            kind, _, bank = name.partition(".")
            if kind in _BANKED:
                value = value[live[bank]]
            out[key] = value
        prefix = next(k for k in out if _pool_key(k) is not None).split(f"{POOL_ATTRIBUTE}.")[0] + f"{POOL_ATTRIBUTE}."
        for bank, rows in live.items():
            out[f"{prefix}{_LIVE_ROWS}.{bank}"] = torch.tensor(rows, dtype=torch.long)
        return out

    @classmethod
    def _remap_adapter_state_dict_for_load(
        cls, model: nn.Module, config: SharedLoRAConfig, adapter_name: str, state_dict: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Write the saved live rows back into full-size banks (the rows nobody reads stay as they
        are) and key everything as the model does."""
        model_keys = {_pool_key(k): k for k in model.state_dict() if _pool_key(k) is not None}
        model_state = model.state_dict()
        saved = {_pool_key(k): v for k, v in state_dict.items() if _pool_key(k) is not None}
        rows = {name.partition(".")[2]: v for name, v in saved.items() if name.startswith(_LIVE_ROWS + ".")}
        out = {k: v for k, v in state_dict.items() if _pool_key(k) is None}
        for name, value in saved.items():
            if name.startswith(_LIVE_ROWS + "."):
                continue
            if name not in model_keys:
                raise ValueError(f"saved adapter has {name!r}, which this model's pool does not")
            kind, _, bank = name.partition(".")
            if kind in _BANKED:
                full = model_state[model_keys[name]].detach().clone()
                full[rows[bank].to(full.device)] = value.to(full.device, full.dtype)
                value = full
            out[model_keys[name]] = value
        return out


def _pool_key(key: str) -> str | None:
    """``base_model.model.aslora_pool.lora_B.query`` → ``lora_B.query``; ``None`` outside the pool."""
    match = re.search(rf"(?:^|\.){POOL_ATTRIBUTE}\.(.+)$", key)
    return match.group(1) if match else None


def _live_trainable_parameters(self: PeftModel) -> tuple[int, int]:
    """``PeftModel.get_nb_trainable_parameters`` for a model with our pool: a bank counts its
    live rows (what ``print_trainable_parameters`` shows); other PEFT models are unchanged."""
    trainable, total = _ORIGINAL_COUNT(self)
    pool = find_pool(self)
    if pool is None:
        return trainable, total
    live = pool.live_numel()
    retired = sum(p.numel() - live[id(p)] for p in pool.parameters())
    retired_trainable = sum(p.numel() - live[id(p)] for p in pool.parameters() if p.requires_grad)
    return trainable - retired_trainable, total - retired


_ORIGINAL_COUNT = PeftModel.get_nb_trainable_parameters


def register() -> None:
    """Make PEFT know ASLORA, SHARELORA and TIEDLORA (idempotent; ``import aslora`` calls it)."""
    import peft
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    if not peft.__version__.startswith(SUPPORTED_PEFT):
        import warnings

        warnings.warn(
            f"aslora's PEFT integration is tested with PEFT {SUPPORTED_PEFT}; this is {peft.__version__}. "
            f"Run tests/aslora/integrations/test_integrations.py before trusting saved adapters.",
            stacklevel=2,
        )
    for cls in (ASLoRAConfig, ShareLoRAConfig, TiedLoRAConfig):
        name = PEFT_TYPE_NAMES[cls.__name__]
        PEFT_TYPE_TO_CONFIG_MAPPING[name] = cls
        PEFT_TYPE_TO_TUNER_MAPPING[name] = SharedLoRATuner
        PEFT_TYPE_TO_PREFIX_MAPPING[name] = POOL_ATTRIBUTE
    PeftModel.get_nb_trainable_parameters = _live_trainable_parameters
