"""Bad numbers and bad input (issue 5): non-finite policy, validate_only, and a config fuzz."""

from __future__ import annotations

import random

import pytest
import torch

import aslora
from aslora.harness.inputs.data import TaskData, get_task
from aslora.harness.runs.run import run
from aslora.harness.runs.train_settings import TrainSettings
from aslora.harness.training.fit_record import FitOptions, NonFiniteError
from aslora.harness.training.loop import fit
from hydra_glue import compose_run
from tests.conftest import tiny_bert


def _tiny_task(n=32):
    generator = torch.Generator().manual_seed(0)
    rows = [{"input_ids": torch.randint(2, 97, (6,), generator=generator), "labels": i % 2} for i in range(n)]
    return TaskData(get_task("rt_polarity"), train=rows, validation=rows[:8], test=None)


def _collate(rows):
    return {
        "input_ids": torch.stack([r["input_ids"] for r in rows]),
        "labels": torch.tensor([r["labels"] for r in rows]),
    }


def _poison_after(model, calls: set[int]):
    """Make the classifier's output NaN on the given training forward calls (1-based)."""
    count = {"n": 0}

    def hook(module, inputs, output):
        if module.training:
            count["n"] += 1
            if count["n"] in calls:
                return output * float("nan")
        return output

    model.classifier.register_forward_hook(hook)


def test_nonfinite_loss_stops_with_error_naming_the_step_and_last_checkpoint(tmp_path):
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=2))
    _poison_after(model, {5})
    settings = TrainSettings(lr=1e-3, epochs=1, batch_size=4, progress_bar=False)
    options = FitOptions(checkpoint_dir=tmp_path, checkpoint_every_steps=2)
    with pytest.raises(
        NonFiniteError, match=r"non-finite loss or gradient after step 4 \(epoch 1, batch 5\).*step-000000004"
    ):
        fit(model, _tiny_task(), _collate, settings, options=options)


def test_skip_policy_drops_bad_updates_and_counts_them():
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=2))
    _poison_after(model, {2, 6})
    result = fit(
        model,
        _tiny_task(),
        _collate,
        TrainSettings(lr=1e-3, epochs=1, batch_size=4, progress_bar=False, nonfinite="skip"),
    )
    assert result.skipped_steps == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert len(result.epochs) == 1 and result.epochs[0]["step"] == 8 - 2


def test_skip_policy_stops_after_too_many():
    model = aslora.apply_adapter(tiny_bert(), aslora.ShareLoRAConfig(r=2))
    _poison_after(model, {1, 2, 3})
    settings = TrainSettings(lr=1e-3, epochs=1, batch_size=4, progress_bar=False, nonfinite="skip", max_skipped_steps=2)
    with pytest.raises(NonFiniteError, match="3 updates skipped, more than train.max_skipped_steps=2"):
        fit(model, _tiny_task(), _collate, settings)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["train.fsdp=true"], "train.fsdp=true shards over several processes"),
        (["train.fsdp=true", "checkpoint.every_steps=4"], "sharded checkpoints are not supported yet; use DDP"),
        (["run_name=" + "r" * 300], r"run_name='r+'… \(300 bytes\) must be printable and at most 250 bytes"),
        (
            ["adapter.params.max_merges={query: 2}"],
            r"must give a cap for each merge group, which are the module types \['query', 'value'\]",
        ),
    ],
)
def test_settings_that_cannot_work_fail_before_loading(overrides, message, tmp_path):
    container, choices = compose_run([*overrides, "debug=smoke", f"experiments_dir={tmp_path}"])
    with pytest.raises(ValueError, match=message):
        run(container, choices)
    assert not any(tmp_path.iterdir())


def test_validate_only_loads_nothing_and_writes_nothing(tmp_path, monkeypatch):
    import aslora.harness.runs.run as run_module

    loaded = []
    for name in ("load_classifier", "load_causal_lm", "load_task", "apply_adapter"):
        monkeypatch.setattr(run_module, name, lambda *a, _name=name, **k: loaded.append(_name))
    container, choices = compose_run(["validate_only=true", f"experiments_dir={tmp_path}"])
    assert run(container, choices) is None
    assert loaded == [] and not any(tmp_path.iterdir())
    # the same run without validate_only reaches the loaders (so the patch observes loading)
    container, choices = compose_run([f"experiments_dir={tmp_path}"])
    with pytest.raises(TypeError):  # the patched loader returns None, not (tokenizer, model)
        run(container, choices)
    assert loaded == ["load_classifier"]


# ------------------------------------------------------------------------------------------------
# Fuzz: malformed overrides of every kind each get a clear error and write nothing.
KEYS = [
    "seed",
    "train.lr",
    "train.epochs",
    "train.batch_size",
    "train.warmup_ratio",
    "train.weight_decay",
    "train.max_grad_norm",
    "train.mixed_precision",
    "train.nonfinite",
    "task.max_length",
    "task.max_train_examples",
    "adapter.params.r",
    "adapter.params.lora_alpha",
    "adapter.params.max_merges",
    "adapter.params.merge_candidates",
    "adapter.params.a_sharing",
    "adapter.params.merge_update_ratio",
    "adapter.params.merge_start_fraction",
    "adapter.params.merge_interval_fraction",
    "adapter.params.merge_distance_threshold",
    "adapter.params.lora_dropout",
    "checkpoint.every_steps",
    "checkpoint.keep_last",
    "wandb.mode",
    "model.dropout",
    "run_name",
    "hub",
    "resume",
]
BAD_VALUES = ["-1", "0", "-0.5", "1e300", "nan", "''", "abc", "[1,2]", "{a: 1}", "true", "2.5", "-1e-9"]
GOOD = {
    "seed": {"0", "2.5"},
    "train.weight_decay": {"0", "1e300", "2.5"},
    "train.max_grad_norm": {"1e300", "2.5"},
    "adapter.params.lora_alpha": {"1e300", "2.5"},
    "train.lr": {"2.5"},
    "adapter.params.merge_distance_threshold": {"0", "1e300", "2.5"},
    "task.max_length": set(),
    "adapter.params.max_merges": {"0"},
    "adapter.params.lora_dropout": {"0"},
    "model.dropout": {"0"},
    "adapter.params.merge_start_fraction": {"0"},
    "hub": {"true"},
    "resume": {"true"},
    "run_name": {"-1", "0", "abc", "true", "2.5", "-0.5", "1e300", "-1e-9", "nan"},
}


def _cases(n=60, seed=0):
    """``n`` distinct (key, bad value) pairs, drawn reproducibly."""
    rng = random.Random(seed)
    cases: list[tuple[str, str]] = []
    while len(cases) < n:
        key, value = rng.choice(KEYS), rng.choice(BAD_VALUES)
        if value not in GOOD.get(key, set()) and (key, value) not in cases:
            cases.append((key, value))
    return cases


def test_the_fuzz_draws_sixty_distinct_cases():
    assert len(set(_cases())) == 60


@pytest.mark.parametrize("key, value", _cases())
def test_fuzzed_override_fails_clearly_before_anything_is_written(key, value, tmp_path):
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        container, choices = compose_run(
            [f"{key}={value}", "debug=smoke", "validate_only=true", f"experiments_dir={tmp_path / 'exp'}"]
        )
        outcome = run(container, choices)
    except (ValueError, HydraException, OmegaConfBaseException) as error:
        message = str(error)
        assert message and len(message) < 5000
        # the message names the key (or its last part) or the value that was wrong; an empty value
        # is in every string, so then only the key counts
        names_value = value.strip("'") != "" and value.strip("'") in message
        assert key.split(".")[-1] in message or names_value, message
    else:
        pytest.fail(f"{key}={value} was accepted (returned {outcome!r})")
    assert not (tmp_path / "exp").exists()
