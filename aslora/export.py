"""Saving, loading and exporting shared-pool adapters.

Our format (a directory), named so that no tool mistakes it for a PEFT adapter:
  * ``aslora_config.json`` — ``"format": "aslora-adapter"``, the adapter type and config, the
    layer→B map, the slots, the live B's, the merge history and the running-mean count;
  * ``aslora_model.safetensors`` — each A, the **live** B's only (a tied B is one tensor; a
    retired B is not saved, so the file stays < 25 % of LoRA's), the Tied-LoRA vectors, the
    running means of the live B's (so training can continue) and the task head.

Versions: 3 (this one) keys every B by name (``lora_B.query_3``), as version 1 did; version 2
stacked each merge group's live B's into one tensor (``lora_B.query``), in the order its
``live_B`` lists them — both load.

``export_peft_lora`` writes the same adapter as a standard PEFT LoRA adapter — per-layer copies of
A and of the (tied) B — that ``peft.PeftModel.from_pretrained`` loads, so an ASLoRA adapter can be
served anywhere LoRA is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from aslora import adapter_check
from aslora.adapter_check import read_json
from aslora.adapters.config import ASLoRAConfig, SharedLoRAConfig, ShareLoRAConfig, TiedLoRAConfig
from aslora.adapters.dispatch import HEAD_NAMES_ATTRIBUTE, apply_adapter, head_module_names
from aslora.adapters.fold import remove_adapter
from aslora.adapters.layers import SharedLoRALinear
from aslora.adapters.pool import SharedLoRAPool
from aslora.adapters.pools import find_pool, find_pools

FORMAT = "aslora-adapter"
FORMAT_VERSION = 3
CONFIG_FILE = "aslora_config.json"
WEIGHTS_FILE = "aslora_model.safetensors"
PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
_CONFIG_TYPES = {cls.__name__: cls for cls in (ASLoRAConfig, ShareLoRAConfig, TiedLoRAConfig)}


def save_adapter(
    model: nn.Module, directory: str | os.PathLike, *, training_state: bool = True, adapter_name: str | None = None
) -> Path:
    """Write the adapter of ``model`` (adapted with one of our configs) to ``directory``.

    ``training_state=False`` leaves out the running means of B, which only training needs: the
    smallest file that still reproduces the adapted model's outputs. ``adapter_name``: which one,
    on a model with several (``None``: its only one).
    """
    pool = _require_pool(model, adapter_name)
    live = pool.live_rows()
    tensors = _adapter_tensors(model, pool, training_state=training_state)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "adapter_type": type(pool.config).__name__,
        "config": _jsonable_config(pool.config),
        "head_modules": head_module_names(model),
        "slots": pool.describe()["slots"],
        "sharing": pool.sharing_map(),
        "live_B": {bank: [pool.row_names[bank][row] for row in rows] for bank, rows in live.items()},
        "merge_history": pool.merge_history,
        # without saved means, training resumed from this file starts them afresh
        "num_mean_updates": int(pool.num_mean_updates) if training_state else 0,
    }
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, directory / WEIGHTS_FILE)
    _write_json_atomically(directory / CONFIG_FILE, meta)
    return directory


def read_adapter_meta(directory: str | os.PathLike) -> dict[str, Any]:
    """The JSON half of a saved adapter (``aslora_config.json``; a version-1 directory's
    ``adapter_config.json``). Raises ``ValueError`` when the directory holds neither."""
    directory = Path(directory)
    for name in (CONFIG_FILE, PEFT_CONFIG_FILE):
        path = directory / name
        if path.is_file():
            meta = read_json(path)
            if isinstance(meta, dict) and meta.get("format") == FORMAT:
                return meta
            if name == CONFIG_FILE:
                raise ValueError(
                    f"{path} is not an aslora adapter "
                    f"(format={meta.get('format') if isinstance(meta, dict) else meta!r})"
                )
    if (directory / PEFT_CONFIG_FILE).is_file():
        raise ValueError(
            f"{directory} holds a PEFT adapter, not an aslora one: load it with peft.PeftModel.from_pretrained"
        )
    raise ValueError(f"{directory / CONFIG_FILE} does not exist: {directory} is not a saved aslora adapter")


def load_adapter(model: nn.Module, directory: str | os.PathLike) -> nn.Module:
    """Apply the saved adapter to a fresh base ``model`` and load its tensors and layer→B map.

    Raises:
        ValueError: not an adapter directory, a config type we do not know, a layer map that does
            not fit this model, or tensors missing, unexpected or of the wrong shape.
    """
    directory = Path(directory)
    meta = read_adapter_meta(directory)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{directory}: format_version={version!r} is not one this version of aslora reads (1–{FORMAT_VERSION})"
        )
    meta_path = directory / (CONFIG_FILE if version >= 2 else PEFT_CONFIG_FILE)
    weights_path = directory / (WEIGHTS_FILE if version >= 2 else PEFT_WEIGHTS_FILE)
    if not weights_path.is_file():
        raise ValueError(f"{weights_path} does not exist: {directory} is not a saved aslora adapter")
    # Everything the files alone can tell is checked before the model is touched (adapter_check.py).
    fields = adapter_check.check_meta(meta, meta_path, _CONFIG_TYPES)
    cls = _CONFIG_TYPES[meta["adapter_type"]]
    config_fields = {f.name for f in dataclasses.fields(cls)}
    # version 1 had reuse_input_projection, an option (a tensor-identity cache) since removed
    config = adapter_check.build_config(
        cls, {k: v for k, v in fields.items() if version >= 2 or k in config_fields}, meta_path
    )
    saved = adapter_check.read_weights(weights_path)
    if version >= 2:
        adapter_check.check_rank(config, saved, weights_path)
    adapter_check.check_scaling(config, saved, meta_path)
    trainable = {name: p.requires_grad for name, p in model.named_parameters()}
    had_head_names = hasattr(model, HEAD_NAMES_ATTRIBUTE)
    adapted = apply_adapter(model, config, head_modules=meta["head_modules"])
    try:
        _load_into(adapted, directory, meta, saved, version)
    except Exception:  # what needed the model does not fit it: give the base model back as it was
        remove_adapter(adapted)
        for name, p in adapted.named_parameters():
            p.requires_grad_(trainable.get(name, p.requires_grad))
        if not had_head_names and hasattr(adapted, HEAD_NAMES_ATTRIBUTE):
            delattr(adapted, HEAD_NAMES_ATTRIBUTE)  # set by apply_adapter: nothing of the load stays
        raise
    return adapted


def _load_into(
    model: nn.Module, directory: Path, meta: dict[str, Any], saved: dict[str, torch.Tensor], version: int
) -> None:
    pool = _require_pool(model)
    pool.restore(meta["sharing"], meta["merge_history"], meta["num_mean_updates"])
    if version == 2:
        saved = _per_B_from_version_2(meta, saved)
    training_state = any(k.startswith("running_mean_B.") for k in saved)
    expected = _adapter_tensors(model, pool, training_state=training_state)
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    if missing or unexpected:
        raise ValueError(f"adapter in {directory} does not fit this model: missing {missing}, unexpected {unexpected}")
    wrong = {k: (tuple(saved[k].shape), tuple(v.shape)) for k, v in expected.items() if saved[k].shape != v.shape}
    if wrong:
        raise ValueError(f"adapter in {directory} has tensors of the wrong shape (saved, model): {wrong}")
    with torch.no_grad():
        for key, target in _adapter_targets(model, pool).items():
            if key in saved:
                target.copy_(saved[key].to(target.dtype))


def export_peft_lora(model: nn.Module, directory: str | os.PathLike, adapter_name: str | None = None) -> Path:
    """Write the adapter as a standard PEFT LoRA adapter: for each adapted layer, a copy of its A
    and of its B (Tied-LoRA's ``diag(v)·B·diag(u)`` folded into B), plus the task head — the exact
    update at rank r, where PEFT's ``convert_to_lora`` would approximate ΔW by SVD (and refuses
    our layers). ``model`` may be ours or PEFT-wrapped; ``adapter_name`` picks one of several.

    The result loads with ``peft.PeftModel.from_pretrained(base_model, directory)``.
    """
    import peft

    pool = _require_pool(model, adapter_name)
    adapter_name = next(n for n, p in find_pools(model).aslora_pool.items() if p is pool)
    # module names as in the base model (a PeftModel's carry base_model.model. in front)
    layers = {
        name.removeprefix("base_model.model."): m
        for name, m in model.named_modules()
        if isinstance(m, SharedLoRALinear) and adapter_name in m.slot
    }
    tensors: dict[str, torch.Tensor] = {}
    for name, layer in layers.items():
        a = pool.lora_A[layer.slot[adapter_name].a_key]
        b = layer.effective_B(adapter_name, scaled=False)  # Tied-LoRA's diag(v)·B·diag(u); PEFT applies α/r itself
        tensors[f"base_model.model.{name}.lora_A.weight"] = a
        tensors[f"base_model.model.{name}.lora_B.weight"] = b
    heads = [] if isinstance(model, peft.PeftModel) else head_module_names(model)  # PEFT's own: not exported
    for head in heads:
        for pname, p in model.get_submodule(head).named_parameters():
            tensors[f"base_model.model.{head}.{pname}"] = p
    peft_config = peft.LoraConfig(
        r=pool.config.r,
        lora_alpha=pool.config.lora_alpha,
        lora_dropout=pool.config.lora_dropout,
        target_modules=sorted(layers),
        modules_to_save=[h.rsplit(".", 1)[-1] for h in heads] or None,
    )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft_config.save_pretrained(str(directory))
    save_file({k: v.detach().contiguous().cpu().clone() for k, v in tensors.items()}, directory / PEFT_WEIGHTS_FILE)
    return directory


def _adapter_targets(model: nn.Module, pool: SharedLoRAPool) -> dict[str, torch.Tensor]:
    """Saved key → the tensor it is loaded into (every B, retired ones too)."""
    targets: dict[str, torch.Tensor] = {}
    for prefix in ("lora_A", "lora_B", "lora_u", "lora_v", "running_mean_B"):
        for key, value in getattr(pool, prefix).items():
            targets[f"{prefix}.{key}"] = value
    for head in head_module_names(model):
        for pname, p in model.get_submodule(head).named_parameters():
            targets[f"head.{head}.{pname}"] = p
    return targets


def _adapter_tensors(model: nn.Module, pool: SharedLoRAPool, *, training_state: bool) -> dict[str, torch.Tensor]:
    """What a saved adapter holds: the live B's (and their running means) only."""
    live = set(pool.live_B_names())
    tensors = {}
    for key, value in _adapter_targets(model, pool).items():
        kind, _, name = key.partition(".")
        if kind == "running_mean_B" and not training_state:
            continue
        if kind in ("lora_B", "running_mean_B") and name not in live:
            continue
        tensors[key] = value
    return tensors


def _per_B_from_version_2(meta: dict[str, Any], saved: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Version 2 stacked each merge group's live B's (``lora_B.query``, rows as ``live_B`` lists
    them): one tensor per B again."""
    converted = {k: v for k, v in saved.items() if not k.startswith(("lora_B.", "running_mean_B."))}
    for prefix in ("lora_B", "running_mean_B"):
        for bank, names in meta.get("live_B", {}).items():
            stacked = saved.get(f"{prefix}.{bank}")
            if stacked is None:
                continue
            if stacked.shape[0] != len(names):
                raise ValueError(
                    f"version-2 adapter: {prefix}.{bank} has {stacked.shape[0]} rows, live_B lists {names}"
                )
            converted.update({f"{prefix}.{name}": row for name, row in zip(names, stacked, strict=True)})
    return converted


def _require_pool(model: nn.Module, adapter_name: str | None = None) -> SharedLoRAPool:
    pool = find_pool(model, adapter_name)
    if pool is None:
        raise ValueError(f"{type(model).__name__} carries no aslora adapter (ASLoRA, ShareLoRA or Tied-LoRA)")
    return pool


def _jsonable_config(config: SharedLoRAConfig) -> dict[str, Any]:
    data = dataclasses.asdict(config)
    if isinstance(data["target_modules"], tuple):
        data["target_modules"] = list(data["target_modules"])
    return data


def _write_json_atomically(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def check_lora_adapter_dir(directory: str | os.PathLike) -> None:
    """Raise ``ValueError`` unless ``directory`` holds a saved PEFT LoRA adapter (config + weights).
    Cheap — reads one small JSON file — so a run checks ``init_adapter_from`` before loading a model."""
    directory = Path(directory)
    if not (directory / PEFT_WEIGHTS_FILE).is_file() or not (directory / PEFT_CONFIG_FILE).is_file():
        raise ValueError(
            f"init_adapter_from={str(directory)!r} holds no saved adapter: no PEFT adapter there "
            f"({PEFT_CONFIG_FILE} + {PEFT_WEIGHTS_FILE}); point it at a finished lora run's adapter/ directory "
            f"(e.g. experiments/<mnli run>/adapter)"
        )
    meta = read_json(directory / PEFT_CONFIG_FILE)
    if not isinstance(meta, dict) or meta.get("peft_type") != "LORA":
        raise ValueError(f"init_adapter_from={str(directory)!r}: the saved adapter is not a LoRA adapter")


def init_lora_from(model: nn.Module, directory: str | os.PathLike) -> int:
    """Initialise a PEFT LoRA model's A and B from another run's saved PEFT LoRA adapter, leaving
    the task head as it is — the LoRA paper's (§5.1) MNLI initialisation for MRPC, RTE and STS-B:
    those tasks start from the LoRA matrices trained on MNLI, with their own fresh head (their label
    sets differ). Returns the number of tensors loaded.

    Raises:
        ValueError: ``model`` is not a PEFT LoRA model, the directory holds no PEFT adapter, or the
            saved matrices do not match the model's (missing, extra, or of another shape).
    """
    import peft

    if not isinstance(model, peft.PeftModel) or not isinstance(model.peft_config.get("default"), peft.LoraConfig):
        raise ValueError(
            f"init from {directory}: only a PEFT LoRA model (adapter=lora) can take LoRA weights; "
            f"got {type(model).__name__}"
        )
    check_lora_adapter_dir(directory)
    path = Path(directory) / PEFT_WEIGHTS_FILE
    # PEFT saves "<module>.lora_A.weight"; the live parameter is "<module>.lora_A.default.weight".
    # Only the LoRA matrices are taken: the head is this task's own (its label set may differ).
    saved = {
        k.replace(".lora_A.", ".lora_A.default.").replace(".lora_B.", ".lora_B.default."): v
        for k, v in adapter_check.read_weights(path).items()
        if ".lora_" in k
    }
    expected = {k: v for k, v in model.named_parameters() if ".lora_" in k}
    missing, unexpected = sorted(set(expected) - set(saved)), sorted(set(saved) - set(expected))
    wrong_shape = sorted(k for k in set(saved) & set(expected) if saved[k].shape != expected[k].shape)
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"init from {directory}: the saved LoRA does not fit this model — missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]} (same model, targets and r?)"
        )
    with torch.no_grad():
        for name, value in saved.items():
            expected[name].copy_(value)
    return len(saved)
