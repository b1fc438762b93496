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

import json
from pathlib import Path
from typing import Any

import torch

_FIELDS = {
    "adapter_type": str,
    "config": dict,
    "head_modules": list,
    "sharing": dict,
    "merge_history": list,
    "num_mean_updates": int,
}
_EVENT_FIELDS = {"step": (int, float), "kept": str, "retired": str, "distance": (int, float)}


def read_json(path: Path) -> Any:
    """A JSON file, or ``ValueError`` naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON ({error})") from None


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
    if meta["num_mean_updates"] < 0:
        raise ValueError(f"{path}: num_mean_updates={meta['num_mean_updates']} must be >= 0")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in meta["sharing"].items()):
        raise ValueError(f"{path}: sharing must map layer names to B names (strings)")
    for i, event in enumerate(meta["merge_history"]):
        if not isinstance(event, dict) or any(
            not isinstance(event.get(k), t) or isinstance(event.get(k), bool) for k, t in _EVENT_FIELDS.items()
        ):
            raise ValueError(
                f"{path}: merge_history[{i}] must hold {sorted(_EVENT_FIELDS)} (numbers and B names), got {event!r}"
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
    r = getattr(config, "r")
    wrong = [
        f"{k} {tuple(v.shape)}"
        for k, v in tensors.items()
        if (k.startswith("lora_A.") and (v.dim() != 2 or v.shape[0] != r))
        or (k.startswith("lora_B.") and (v.dim() < 2 or v.shape[-1] != r))
    ]
    if wrong:
        raise ValueError(f"{path}: the config says r={r}, but the tensors have another rank: {wrong[:3]}")
