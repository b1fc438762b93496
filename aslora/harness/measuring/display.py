"""What a reader sees: the names and colours of adapters, models and tasks in tables and figures —
one table, on the reporting side. The library's registry (``aslora/adapters/registry.py``) knows
an adapter by its config name only; a new adapter is a row there and a row here
(tests/aslora/harness/measuring/test_display.py holds the two tables to the same adapters).
"""

from __future__ import annotations

from typing import NamedTuple


class Shown(NamedTuple):
    display: str
    """As tables and figures show it."""
    colour: str | None
    """Its colour in figures (``None``: not drawn, e.g. full fine-tuning)."""


ADAPTERS_SHOWN = {  # in the order of tables and legends
    "full": Shown("Full FT", None),
    "lora": Shown("LoRA", "tab:blue"),
    "vera": Shown("VeRA", "tab:green"),
    "tiedlora": Shown("Tied-LoRA", "tab:purple"),
    "sharelora": Shown("ShareLoRA", "tab:brown"),
    "aslora": Shown("ASLoRA", "tab:red"),
}
ORDER = list(ADAPTERS_SHOWN)
DISPLAY_NAMES = {name: shown.display for name, shown in ADAPTERS_SHOWN.items()}
COLOURS = {name: shown.colour for name, shown in ADAPTERS_SHOWN.items() if shown.colour}

MODEL_NAMES = {
    "minilm-l6": "MiniLM-L6",
    "smollm2-135m": "SmolLM2-135M-Instruct",
    "roberta-base": "RoBERTa-base",
    "roberta-large": "RoBERTa-large",
    "llama-2-7b": "LLaMA-2-7B",
    "mpnet-base": "MPNet-base",
}
TASK_NAMES = {
    "rt_polarity": "Rotten Tomatoes (SST-2 stand-in)",
    "bbc_news": "BBC News topics",
    "instruct": "chatterbot dialogue pairs",
    "instruct_chitchat": "chit-chat dialogue pairs",
    "alpaca": "Alpaca",
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "cola": "CoLA",
    "qnli": "QNLI",
    "rte": "RTE",
    "stsb": "STS-B",
    "mnli": "MNLI",
    "qqp": "QQP",
}
