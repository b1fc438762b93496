"""Where an adapted linear layer sits and which shared factors it reads: its :class:`Slot`.

``inject.py`` builds one slot per adapted layer, in forward order; the pool
(``pool.py``) keys its factors, its layer→B map and its merge log by them, and the layer
(``layers.py``) holds its slot to find its A and its B there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass
class Slot:
    """One adapted linear layer: where it sits and which shared factors it uses."""

    module_name: str
    module_type: str
    depth: int
    """Position among the adapted modules of the same type, in forward order (0 = lowest)."""
    layer: int
    """The block index in the module's path (``…layer.3.attention…`` → 3), the order and the
    adjacency of ASLoRA's merges; ``depth`` when the path holds no index."""
    in_features: int
    out_features: int
    a_key: str
    bank: str
    """The merge group this layer's B belongs to (a module type, or a B shape under ``joint``)."""
    index: int
    """This layer's position in ``b_map``."""
    row: int
    """The position in its group of the B this layer reads before any tie (its own B)."""

    @property
    def key(self) -> str:
        return f"{self.module_type}_{self.depth}"


def layer_index(module_name: str, fallback: int) -> int:
    """The last integer component of a module path: ``model.layers.12.self_attn.q_proj`` → 12."""
    numbers = [int(part) for part in module_name.split(".") if re.fullmatch(r"\d+", part)]
    return numbers[-1] if numbers else fallback
