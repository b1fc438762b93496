"""Instruction tuning data: (prompt, response) pairs → causal-LM examples whose prompt tokens are
masked out of the loss, the standard supervised fine-tuning objective (Alpaca; the paper's §4.3
instruction-tuning setup trains LLaMA-2-7B on Alpaca-style data).

Sources:

* ``chatterbot``: the English ``chatterbot-corpus`` conversations, as adjacent (utterance, reply)
  pairs, exact duplicates dropped (BSD-3), read from the installed package — offline.
* ``chitchat``: the Chit-Chat Challenge dataset (``chitchat-dataset``; MIT), adjacent turns of one
  conversation as (prompt, reply) pairs (131,548 non-empty pairs) — offline.
* ``alpaca``: ``tatsu-lab/alpaca`` (52,002 instructions) from the Hugging Face Hub; the prompt is
  the instruction, followed by its input when it has one.

Prompt format: the tokenizer's chat template where it has one (SmolLM2-Instruct), else the Alpaca
template (LLaMA-2-7B base ships none). Either way the example is ``prompt ++ response``, tokenised
as two pieces so the loss mask falls exactly on the boundary; labels are ``-100`` on the prompt.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

IGNORE_INDEX = -100
"""Label of a token the loss skips (``torch.nn.CrossEntropyLoss``'s default ``ignore_index``)."""

ALPACA_TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{prompt}\n\n### Response:\n"
)


def _package_dir(package: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0])


def load_chatterbot() -> Any:
    """Adjacent (utterance, reply) pairs of every English chatterbot-corpus conversation."""
    import pandas as pd
    import yaml

    rows = []
    for path in sorted((_package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        for conversation in yaml.safe_load(path.read_text(encoding="utf-8")).get("conversations") or []:
            turns = [str(t).strip() for t in conversation]
            rows.extend((a, b) for a, b in zip(turns, turns[1:], strict=False) if a and b)
    # some files repeat whole conversations: an identical pair must not sit in train and test both
    return pd.DataFrame(rows, columns=["prompt", "response"]).drop_duplicates(ignore_index=True)


def load_chitchat() -> Any:
    """Adjacent turns of each Chit-Chat Challenge conversation; a turn's messages joined by a space."""
    import pandas as pd

    data = json.loads((_package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    rows = []
    for key in sorted(data):
        turns = [" ".join(m["text"].strip() for m in turn).strip() for turn in data[key]["messages"]]
        rows.extend((a, b) for a, b in zip(turns, turns[1:], strict=False) if a and b)
    return pd.DataFrame(rows, columns=["prompt", "response"])


ALPACA_COLUMNS = ("instruction", "input", "output")  # tatsu-lab/alpaca's schema (it also has `text`)


def load_alpaca(local_dir: str | None = None) -> Any:
    """``tatsu-lab/alpaca`` from the Hub — or ``<local_dir>/train.jsonl`` in its schema — as
    (instruction [+ input], output) pairs."""
    import datasets
    import pandas as pd

    if local_dir is None:
        frame = datasets.load_dataset("tatsu-lab/alpaca", split="train").to_pandas()
    else:
        frame = read_local_alpaca(local_dir)
    prompts = [f"{i}\n\n{x}" if x else i for i, x in zip(frame["instruction"], frame["input"], strict=True)]
    return pd.DataFrame({"prompt": prompts, "response": frame["output"].astype(str)})


def read_local_alpaca(local_dir: str) -> Any:
    """``<local_dir>/train.jsonl`` with Alpaca's columns, every value a string; ``ValueError`` naming
    the file and what is wrong otherwise."""
    import pandas as pd

    path = Path(local_dir) / "train.jsonl"
    if not path.is_file():
        raise ValueError(f"task alpaca: local_dir={local_dir!r} has no train.jsonl (tatsu-lab/alpaca's columns)")
    try:
        frame = pd.read_json(path, lines=True, dtype=False)
    except ValueError as error:
        raise ValueError(f"task alpaca: {path} cannot be read as JSON lines ({str(error)[:200]})") from None
    missing = [c for c in ALPACA_COLUMNS if c not in frame.columns]
    if missing or frame.empty:
        raise ValueError(f"task alpaca: {path} lacks column(s) {missing} or rows; it has {list(frame.columns)}")
    for column in ALPACA_COLUMNS:
        bad = [i for i, v in enumerate(frame[column]) if not isinstance(v, str)]
        if bad:
            raise ValueError(f"task alpaca: {path} row {bad[0]}: {column!r} is not a string")
    return frame


def prompt_format(tokenizer: Any) -> str:
    """``chat_template`` when the tokenizer has one, else ``alpaca``."""
    return "chat_template" if getattr(tokenizer, "chat_template", None) else "alpaca"


def split_prompt(tokenizer: Any, prompt: str, response: str) -> tuple[str, str]:
    """The example's text as (prompt part, response part); their concatenation is the full text,
    and the response part carries the end-of-turn token the model must learn to emit."""
    if prompt_format(tokenizer) == "chat_template":
        user = [{"role": "user", "content": prompt}]
        head = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        if not full.startswith(head):
            raise ValueError(
                "the tokenizer's chat template does not render the prompt as a prefix of the "
                "conversation; the loss mask cannot be placed"
            )
        return head, full[len(head) :]
    bos = tokenizer.bos_token or ""
    return bos + ALPACA_TEMPLATE.format(prompt=prompt), response + (tokenizer.eos_token or "")


def encode(tokenizer: Any, prompt: str, response: str, max_length: int) -> dict[str, list[int]] | None:
    """``input_ids``, ``attention_mask`` and ``labels`` (``-100`` on the prompt), truncated to
    ``max_length``; ``None`` when the prompt alone leaves no room for a response token."""
    head, tail = split_prompt(tokenizer, prompt, response)
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    response_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length or not response_ids:
        return None
    ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}


def tokenise(dataset: Any, tokenizer: Any, max_length: int, name: str) -> Any:
    """Encode every pair; pairs whose prompt fills ``max_length`` are dropped (and counted)."""
    missing = [c for c in ("prompt", "response") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"task {name}: data lacks column(s) {missing}; it has {dataset.column_names}")

    def encode_batch(batch: dict[str, list]) -> dict[str, list]:
        out: dict[str, list] = {"input_ids": [], "attention_mask": [], "labels": []}
        for prompt, response in zip(batch["prompt"], batch["response"], strict=True):
            example = encode(tokenizer, prompt, response, max_length)
            if example is not None:
                for key, value in example.items():
                    out[key].append(value)
        return out

    return dataset.map(encode_batch, batched=True, remove_columns=dataset.column_names, desc=f"tokenise {name}")


def generate_samples(
    model: Any, tokenizer: Any, pairs: list[tuple[str, str]], max_new_tokens: int = 48
) -> list[dict[str, str]]:
    """Greedy continuations of held-out prompts, for the report (a qualitative check, not a metric)."""

    model = getattr(model, "module", model)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    samples = []
    with torch.no_grad():
        for prompt, reference in pairs:
            head, _ = split_prompt(tokenizer, prompt, reference)
            ids = tokenizer(head, add_special_tokens=False, return_tensors="pt")["input_ids"].to(device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
            )
            text = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
            samples.append({"prompt": prompt, "reference": reference, "generated": text})
    model.train(was_training)
    return samples
