"""What a saved adapter's files must satisfy before any of it touches a model.

Adapters are shared — on a cluster disk, in a bucket, attached to an issue — so ``load_adapter``
reads them as untrusted input: JSON and safetensors only (parsers that build data, never code),
and every check that needs no model runs before the base model is modified, so a malformed
directory fails with its file and its problem named and leaves the model as it was:

* the config JSON parses, has the fields a saved adapter has, of the right types, and builds a
  config (unknown fields and bad values are named);
* the weights are a readable safetensors file of finite floating-point tensors;
* the rank the config states is the rank the tensors have — an ``r`` that would allocate
  gigabytes cannot come with a file of a few kilobytes;
* the layer→B map and the merge history are well-formed (that they fit the model, and that the
  history leads to the map, is checked by ``SharedLoRAPool.restore`` once the model is known).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from aslora import json_file

_FIELDS = {
    "adapter_type": str,
    "config": dict,
    "head_modules": list,
    "sharing": dict,
    "merge_history": list,
    "num_mean_updates": int,
}
_EVENT_FIELDS = {"step": (int, float), "kept": str, "retired": str, "distance": (int, float)}
_MAX_COUNT = 2**62  # steps and counts are int64 tensors in the pool


def read_json(path: Path) -> Any:
    """A JSON file, or ``ValueError`` naming it (``aslora/json_file.py``)."""
    return json_file.read_json(path)


def check_meta(meta: Any, path: Path, config_types: dict[str, type]) -> object:
    """The config the metadata describes, or ``ValueError`` naming ``path`` and the problem."""
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    problems = [
        f"{key} must be {kind.__name__}, got {type(meta.get(key)).__name__}"
        for key, kind in _FIELDS.items()
        if not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool)
    ]
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    if meta["adapter_type"] not in config_types:
        raise ValueError(f"{path}: unknown adapter_type {meta['adapter_type']!r}; known: {sorted(config_types)}")
    if not 0 <= meta["num_mean_updates"] <= _MAX_COUNT:
        raise ValueError(f"{path}: num_mean_updates={meta['num_mean_updates']} must be in [0, 2**62]")
    if not all(isinstance(name, str) for name in meta["head_modules"]):
        raise ValueError(f"{path}: head_modules must be a list of module names (strings), got {meta['head_modules']!r}")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta["sharing"].items()):
        raise ValueError(f"{path}: sharing must map layer names to B names (strings)")
    for i, event in enumerate(meta["merge_history"]):
        if not isinstance(event, dict) or any(
            not isinstance(event.get(k), t) or isinstance(event.get(k), bool) for k, t in _EVENT_FIELDS.items()
        ):
            raise ValueError(
                f"{path}: merge_history[{i}] must hold {sorted(_EVENT_FIELDS)} (numbers and B names), got {event!r}"
            )
        if not (
            float(event["step"]).is_integer() and 0 < event["step"] <= _MAX_COUNT and math.isfinite(event["distance"])
        ):
            raise ValueError(
                f"{path}: merge_history[{i}] must have a whole step in [1, 2**62] and a finite distance, got {event!r}"
            )
    return meta["config"]


def build_config(cls: type, fields: dict[str, Any], path: Path) -> object:
    try:
        return cls(**fields)
    except TypeError as error:  # an unknown field
        raise ValueError(f"{path}: the config does not fit {cls.__name__} ({error})") from None
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file: readable, floating point, finite — or ``ValueError``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ValueError(f"{path} does not exist")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable safetensors file ({error})") from None
    not_float = sorted(k for k, v in tensors.items() if not v.is_floating_point())
    if not_float:
        raise ValueError(f"{path}: tensors {not_float[:5]} are {tensors[not_float[0]].dtype}, not floating point")
    not_finite = sorted(k for k, v in tensors.items() if not torch.isfinite(v).all())
    if not_finite:
        raise ValueError(f"{path}: tensors {not_finite[:5]} hold NaN or Inf")
    return tensors


def check_rank(config: object, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Every A is ``(r, d_in)`` and every B ``(…, d_out, r)`` for the config's ``r``."""
    r = config.r
    kinds = {kind for kind in ("lora_A.", "lora_B.") if any(k.startswith(kind) for k in tensors)}
    if len(kinds) < 2:  # else a huge r would be allocated before the missing tensors are noticed
        raise ValueError(f"{path}: holds no lora_A.* or no lora_B.* tensors: not the weights of an adapter of r={r}")
    wrong = [
        f"{k} {tuple(v.shape)}"
        for k, v in tensors.items()
        if (k.startswith("lora_A.") and (v.dim() != 2 or v.shape[0] != r))
        or (k.startswith("lora_B.") and (v.dim() < 2 or v.shape[-1] != r))
    ]
    if wrong:
        raise ValueError(f"{path}: the config says r={r}, but the tensors have another rank: {wrong[:3]}")


def check_scaling(config: object, tensors: dict[str, torch.Tensor], path: Path) -> None:
    """``(lora_alpha / r) · B · A`` stays finite in float32: each entry of ΔW is at most
    ``|α/r| · r · max|B| · max|A|``. An absurd ``lora_alpha`` would otherwise load and give NaN logits."""
    scaling = getattr(config, "scaling", None)
    if scaling is None:
        return
    largest = {
        kind: max((float(v.abs().max()) for k, v in tensors.items() if k.startswith(kind) and v.numel()), default=0.0)
        for kind in ("lora_A.", "lora_B.", "lora_u.", "lora_v.")
    }
    tied = max(largest["lora_u."], 1.0) * max(largest["lora_v."], 1.0)  # Tied-LoRA's diag(v)·B·diag(u)
    bound = abs(scaling) * config.r * largest["lora_A."] * largest["lora_B."] * tied
    if not bound <= torch.finfo(torch.float32).max / 1e6:  # headroom: ΔW is added to W and multiplied again
        raise ValueError(
            f"{path}: lora_alpha={config.lora_alpha!r} with these weights makes ΔW = (α/r)·B·A reach "
            f"{bound:.3g}: not finite in float32. The adapter's lora_alpha is wrong"
        )
