"""A GLUE task from local files (``task.local_dir``): ``train`` and the validation split, each as
``<split>.jsonl``, ``.json``, ``.csv`` or ``.parquet`` in GLUE's columns (the task's text fields and
``label``). Every file is read whole and checked before any model loads — readable as UTF-8, not
empty, the columns present, every text a string, every label one of the task's classes (a finite
number in range for regression) — and a bad one is refused naming the file and its first bad row.
For users whose machines cannot reach the Hub, and for tests of the GLUE path without it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # data.py imports this module: the spec type is for annotations only
    from aslora.harness.inputs.data import TaskSpec


def read_local_glue(spec: TaskSpec, directory: Path) -> dict[str, Any]:
    """The train and validation splits of a local GLUE-schema folder, each checked: readable (UTF-8),
    not empty, GLUE's columns present, every text a string, every label one of the task's classes
    (a finite number for regression). Raises ``ValueError`` naming the file and the first bad row."""

    splits = {}
    for split, name in (("train", "train"), ("validation", spec.validation_split)):
        path = local_file(directory, name)
        try:
            splits[split] = _read_split(spec, path)
            _check_rows(spec, splits[split], path)
        except ValueError as error:
            if not isinstance(error, UnicodeDecodeError):
                raise
            raise ValueError(
                f"task {spec.name}: {path} cannot be read as {_file_kind(path)}: not UTF-8 ({error})"
            ) from None
        except Exception as error:  # datasets wraps parser errors (broken JSON/CSV) in its own types
            cause = error.__cause__ or error
            raise ValueError(
                f"task {spec.name}: {path} cannot be read as {_file_kind(path)} "
                f"({type(cause).__name__}: {str(cause)[:200]})"
            ) from None
    return splits


def _read_split(spec: TaskSpec, path: Path) -> Any:
    """One local split as an in-memory ``datasets.Dataset`` (nothing cached on disk, so a refused file
    leaves nothing behind). Values keep the types the file gives them: a CSV's texts stay text, even
    "NA", "null" or "1984" (pandas would make them missing values or numbers); a CSV's labels are
    parsed as numbers; JSON and Parquet carry their own types."""
    import datasets

    kind = _file_kind(path)
    if kind == "csv":
        import pandas as pd

        frame = pd.read_csv(
            path, dtype={f: str for f in spec.text_fields}, keep_default_na=False, na_filter=False, encoding="utf-8"
        )
        if "label" in frame.columns and frame["label"].dtype == object:  # not all numbers: keep each value
            frame["label"] = [_number(v) for v in frame["label"]]
        return datasets.Dataset.from_list(frame.to_dict("records")) if len(frame) else _empty(frame.columns)
    if kind == "parquet":
        import pyarrow.parquet as pq

        return datasets.Dataset(pq.read_table(path))
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
            rows = rows.get("data", rows) if isinstance(rows, dict) else rows
    except (json.JSONDecodeError, RecursionError) as error:
        raise ValueError(f"task {spec.name}: {path} cannot be read as json ({type(error).__name__}: {error})") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"task {spec.name}: {path} cannot be read as json: not a list of objects (one per example)")
    columns = list(dict.fromkeys(k for r in rows for k in r))
    return datasets.Dataset.from_dict({c: [r.get(c) for r in rows] for c in columns}) if rows else _empty(columns)


def _number(value: str) -> Any:
    """A CSV label as a number where it is one (``"2"`` → 2, ``"0.5"`` → 0.5); otherwise the text."""
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def _empty(columns: Any) -> Any:
    import datasets

    return datasets.Dataset.from_dict({c: [] for c in columns})


def _check_rows(spec: TaskSpec, dataset: Any, path: Path) -> None:
    if len(dataset) == 0:  # a header-only or empty file
        raise ValueError(f"task {spec.name}: {path} holds no examples")
    missing = [f for f in (*spec.text_fields, "label") if f not in dataset.column_names]
    if missing:
        raise ValueError(f"task {spec.name}: {path} lacks column(s) {missing}; it has {dataset.column_names}")
    for field in spec.text_fields:
        bad = next((i for i, t in enumerate(dataset[field]) if not isinstance(t, str)), None)
        if bad is not None:
            raise ValueError(f"task {spec.name}: {path} row {bad}: {field}={dataset[field][bad]!r} is not text")
    labels = dataset["label"]
    if spec.is_regression:
        bad = next(
            (
                i
                for i, y in enumerate(labels)
                if not isinstance(y, (int, float))
                or isinstance(y, bool)
                or not math.isfinite(y)
                or not (spec.label_range is None or spec.label_range[0] <= y <= spec.label_range[1])
            ),
            None,
        )
        expected = "a finite number" + (
            f" in [{spec.label_range[0]:g}, {spec.label_range[1]:g}]" if spec.label_range else ""
        )
    else:
        bad = next(
            (
                i
                for i, y in enumerate(labels)
                if not isinstance(y, int) or isinstance(y, bool) or not 0 <= y < spec.num_labels
            ),
            None,
        )
        expected = f"one of the task's classes 0…{spec.num_labels - 1}"
    if bad is not None:
        raise ValueError(f"task {spec.name}: {path} row {bad}: label={labels[bad]!r} is not {expected}")


def local_file(directory: Path, split: str) -> Path | None:
    for suffix in (".jsonl", ".json", ".csv", ".parquet"):
        if (directory / f"{split}{suffix}").is_file():
            return directory / f"{split}{suffix}"
    return None


def _file_kind(path: Path) -> str:
    return {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}[path.suffix]
