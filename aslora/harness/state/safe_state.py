"""Nested training state to JSON + safetensors and back, so that loading it can never run code.

``torch.load`` unpickles, and an unpickler calls whatever a file names: anyone who can write into a
run's ``checkpoints/`` folder could run code as the user who resumes it (the SHA-256 manifest beside
the files catches truncation, not tampering — it sits in the same folder). Here a state is split
into a JSON skeleton and a flat ``{name: tensor}`` dict saved with safetensors; both formats are
pure data, read by parsers that build numbers, strings, lists and tensors and nothing else.

Supported: ``dict`` (any keys that are str, int, float, bool or None), ``list``, ``tuple``, ``str``,
``int``, ``float`` (NaN/Inf included), ``bool``, ``None``, ``torch.Tensor`` and ``numpy.ndarray``
(the NumPy RNG state). Anything else is refused when writing, naming its path in the state — so a
checkpoint that could not be read back without pickle is never written.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from aslora.json_file import read_json

_TENSOR, _ARRAY, _TUPLE, _DICT = "__tensor__", "__ndarray__", "__tuple__", "__dict__"
_MARKERS = {_TENSOR, _ARRAY, _TUPLE, _DICT}


def split(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """``state`` → (a JSON-able skeleton, ``{name: tensor}``); each tensor is cloned, contiguous, on CPU."""
    tensors: dict[str, torch.Tensor] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            name = f"t{len(tensors)}"
            tensors[name] = value.detach().cpu().contiguous().clone()
            return {_TENSOR: name}
        if isinstance(value, np.ndarray):
            if value.dtype.kind == "u" and value.dtype.itemsize >= 8:
                raise TypeError(f"{path or 'state'}: a {value.dtype} array cannot be stored exactly")
            name = f"t{len(tensors)}"
            tensors[name] = torch.from_numpy(
                np.ascontiguousarray(value).astype(np.int64 if value.dtype.kind in "ui" else value.dtype)
            ).clone()
            return {_ARRAY: name, "dtype": value.dtype.str}
        if isinstance(value, (np.integer, np.floating)):
            return walk(value.item(), path)
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {"__float__": repr(value)}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]}
        if isinstance(value, list):
            return [walk(v, f"{path}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, dict):
            if all(isinstance(k, str) and k not in _MARKERS and k != "__float__" for k in value):
                return {k: walk(v, f"{path}.{k}") for k, v in value.items()}
            bad = [k for k in value if not (k is None or isinstance(k, (str, int, float, bool)))]
            if bad:
                raise TypeError(
                    f"{path or 'state'}: dict key {bad[0]!r} ({type(bad[0]).__name__}) cannot be stored without pickle"
                )
            return {_DICT: [[k, walk(v, f"{path}.{k}")] for k, v in value.items()]}
        raise TypeError(f"{path or 'state'}: a {type(value).__name__} cannot be stored without pickle")

    return walk(state, ""), tensors


MAX_DEPTH = 32
"""Deepest nesting a state may have (ours is under 10): deeper is refused, not recursed into."""
ARRAY_DTYPES = frozenset(
    np.dtype(t).str
    for t in ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "float16", "float32", "float64")
)
"""NumPy dtypes an array entry may name: fixed-size numbers, nothing whose size a file chooses
(a string dtype of a huge width would turn a small tensor into gigabytes)."""


def join(skeleton: Any, tensors: dict[str, torch.Tensor], source: str = "state") -> Any:
    """The inverse of :func:`split`. Raises ``ValueError`` naming ``source`` for a malformed skeleton
    — nesting deeper than :data:`MAX_DEPTH`, a type marker not in its exact form, an array dtype
    outside :data:`ARRAY_DTYPES` or values it cannot hold — or a tensor it names that is missing."""

    def tensor(name: Any) -> torch.Tensor:
        if not isinstance(name, str) or name not in tensors:
            raise ValueError(f"{source}: names tensor {name!r}, which its tensor file does not hold")
        return tensors[name]

    def array(value: dict[str, Any]) -> np.ndarray:
        dtype = value.get("dtype")
        if set(value) != {_ARRAY, "dtype"} or not isinstance(dtype, str) or dtype not in ARRAY_DTYPES:
            raise ValueError(f"{source}: array entry with dtype {dtype!r}: allowed are {sorted(ARRAY_DTYPES)}")
        data = tensor(value[_ARRAY]).numpy()
        target = np.dtype(dtype)
        if target.kind in "iub" and data.size:
            info = (0, 1) if target.kind == "b" else (np.iinfo(target).min, np.iinfo(target).max)
            if data.dtype.kind not in "iub" or data.min() < info[0] or data.max() > info[1]:
                raise ValueError(f"{source}: array entry {value[_ARRAY]!r} holds values a {dtype} cannot")
        return data.astype(target)

    def walk(value: Any, depth: int) -> Any:
        if depth > MAX_DEPTH:
            raise ValueError(f"{source}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        if not isinstance(value, dict):
            return value
        markers = [k for k in value if k in _MARKERS or k == "__float__"]
        if not markers:
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if len(markers) > 1:
            raise ValueError(f"{source}: an entry with several type markers {markers}")
        marker = markers[0]
        if marker == _ARRAY:
            return array(value)
        if len(value) != 1:
            raise ValueError(f"{source}: a {marker} entry with other fields {sorted(k for k in value if k != marker)}")
        body = value[marker]
        if marker == _TENSOR:
            return tensor(body)
        if marker == "__float__":
            if body not in ("nan", "inf", "-inf"):
                raise ValueError(f"{source}: malformed float entry {value!r}")
            return float(body)
        if not isinstance(body, list):
            raise ValueError(f"{source}: a {marker} entry must hold a list")
        if marker == _TUPLE:
            return tuple(walk(v, depth + 1) for v in body)
        if not all(isinstance(i, list) and len(i) == 2 and _is_key(i[0]) for i in body):  # _DICT
            raise ValueError(
                f"{source}: malformed dict entry (items must be [key, value], keys str/int/float/bool/null)"
            )
        return {k: walk(v, depth + 1) for k, v in body}

    return walk(skeleton, 0)


def _is_key(key: Any) -> bool:
    return key is None or isinstance(key, (str, int, float, bool))


def save(state: Any, json_path: Path, tensors_path: Path) -> None:
    """Write ``state`` as ``json_path`` (skeleton) and ``tensors_path`` (safetensors)."""

    skeleton, tensors = split(state)
    json_path.write_text(json.dumps(skeleton, allow_nan=False))
    save_file(tensors, str(tensors_path))


def load(json_path: Path, tensors_path: Path) -> Any:
    """Read a state written by :func:`save`; nothing here can execute code from the files.

    Raises:
        ValueError: a file missing, not JSON, not safetensors, or the two not matching — naming the file.
    """

    for path in (json_path, tensors_path):
        if not path.is_file():
            raise ValueError(f"{path} is missing")
    skeleton = read_json(json_path, "a state skeleton")
    try:
        tensors = load_file(str(tensors_path))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"{tensors_path} is not a readable safetensors file ({error})") from None
    return join(skeleton, tensors, str(json_path))
