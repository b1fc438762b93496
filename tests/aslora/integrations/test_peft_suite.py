"""PEFT's own generic tuner tests, run against our three tuners with ``peft.LoraConfig`` as the control.

The tests are PEFT's, unchanged: ``tests/test_custom_models.py`` (the custom-model suite: every
method of ``PeftCommonTester`` — save/load, several adapters, merge/unmerge/safe merge, disable,
delete, ``low_cpu_mem_usage``, training, ``modules_to_save``, …) from the source distribution of
the pinned PEFT, which ``make install`` downloads and unpacks into ``.venv/peft-src/`` (never copied
into this repository). Only its list of cases is replaced: the same MLP cases PEFT gives VeRA,
its cross-layer shared tuner, for ASLoRA, ShareLoRA, Tied-LoRA — and for LoRA, the control that
shows a failure is ours and not the suite's. Where a PEFT test does not apply to a method, PEFT's
own test skips it (e.g. mixed-adapter batches, which PEFT runs for LoRA only) and says so.

PEFT's common tester imports ``diffusers`` at module level for its Stable Diffusion tests, which
this suite does not run; an empty stand-in module satisfies that import when diffusers is absent.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

import peft
import pytest

import aslora

pytestmark = pytest.mark.peft_suite  # its own CI step: make test-peft

PEFT_TESTS = Path(sys.prefix) / "peft-src" / f"peft-{peft.__version__}" / "tests"

if not (PEFT_TESTS / "test_custom_models.py").is_file():
    raise RuntimeError(
        f"PEFT's test suite is not at {PEFT_TESTS}: `make install` downloads it "
        f"(pip download --no-binary :all: --no-deps peft=={peft.__version__}, unpacked into .venv/peft-src/)"
    )


def _import_peft_suite() -> types.ModuleType:
    """PEFT's ``tests`` folder as the package ``peft_tests`` (ours is ``tests``)."""
    if "diffusers" not in sys.modules and importlib.util.find_spec("diffusers") is None:
        stand_in = types.ModuleType("diffusers")
        stand_in.StableDiffusionPipeline = None  # only PEFT's Stable Diffusion tests use it
        sys.modules["diffusers"] = stand_in
    package = types.ModuleType("peft_tests")
    package.__path__ = [str(PEFT_TESTS)]
    sys.modules.setdefault("peft_tests", package)
    return importlib.import_module("peft_tests.test_custom_models")


_suite = _import_peft_suite()


def _cases(label: str, config_cls: type) -> list[tuple]:
    """PEFT's VeRA cases on its MLP (``lin0`` 10→20, ``lin1`` 20→2), for ``config_cls``."""
    return [
        (f"Vanilla MLP 1 {label}", "MLP", config_cls, {"target_modules": "lin0"}),
        (f"Vanilla MLP 2 {label}", "MLP", config_cls, {"target_modules": ["lin0"]}),
        (f"Vanilla MLP 3 {label}", "MLP", config_cls, {"target_modules": ["lin1"]}),
        (f"Vanilla MLP 4 {label}", "MLP", config_cls, {"target_modules": ["lin0", "lin1"]}),
        (f"Vanilla MLP 5 {label}", "MLP", config_cls, {"target_modules": ["lin0"], "modules_to_save": ["lin1"]}),
    ]


CASES = [
    *_cases("LoRA", peft.LoraConfig),  # the control
    *_cases("ASLoRA", aslora.ASLoRAConfig),
    *_cases("ShareLoRA", aslora.ShareLoRAConfig),
    *_cases("TiedLoRA", aslora.TiedLoRAConfig),
]

# PEFT's test methods hold their parametrize list by reference: ours replaces its contents
_suite.TEST_CASES[:] = CASES
OURS = (aslora.ASLoRAConfig, aslora.ShareLoRAConfig, aslora.TiedLoRAConfig)
SKIPS = {
    # test name → (the configs it is skipped for, the reason)
    "test_parameters_after_loading_model": (
        (aslora.TiedLoRAConfig,),
        "PEFT's test trains at SGD lr 0.5 on inputs up to 89, where Tied-LoRA's multiplicative v·B·u "
        "diverges to NaN on both sides (PEFT lowers the lr here for VB-LoRA, RandLoRA, UniLoRA and OSF alike)",
    ),
}


def _uses_cases(test) -> bool:
    return any(m.name == "parametrize" and m.args[1] is _suite.TEST_CASES for m in getattr(test, "pytestmark", []))


def _skipping(name: str, test):
    configs, reason = SKIPS[name]

    def run(self, test_name, model_id, config_cls, config_kwargs):
        if config_cls in configs:
            pytest.skip(reason)
        return test(self, test_name, model_id, config_cls, config_kwargs)

    run.pytestmark, run.__name__ = test.pytestmark, name
    return run


# PEFT's tests that do not take the case list exercise PEFT's own methods (DoRA, PVeRA, LoRA with
# trainable tokens, Hub models such as gpt2): they test no tuner of ours, and are left out (None)
_overrides = {}
for _name, _test in vars(_suite.TestPeftCustomModel).items():
    if _name.startswith("test_") and not _uses_cases(_test):
        _overrides[_name] = None
    elif _name in SKIPS:
        _overrides[_name] = _skipping(_name, _test)
TestPeftCustomModel = type("TestPeftCustomModel", (_suite.TestPeftCustomModel,), _overrides)


@pytest.mark.parametrize("config_cls", OURS)
def test_adapted_layers_expose_their_shapes(config_cls):
    from aslora.adapters.layers import SharedLoRALinear

    model = peft.get_peft_model(_suite.MLP(), config_cls(target_modules=["lin0", "lin1"]))
    layers = {name.rsplit(".", 1)[-1]: m for name, m in model.named_modules() if isinstance(m, SharedLoRALinear)}
    assert {k: (m.in_features, m.out_features) for k, m in layers.items()} == {"lin0": (10, 20), "lin1": (20, 2)}


PEFT_CASE_TESTS = 42
"""How many of PEFT 0.21.2's TestPeftCustomModel methods take the case list: each runs once per case,
for LoRA and each of our tuners alike. A PEFT upgrade that renames or drops them changes this count,
and the wrapper must not then pass silently on fewer tests."""


def test_the_wrapper_collects_every_case_test_of_peft_for_every_tuner():
    ours = [
        name
        for name, test in vars(_suite.TestPeftCustomModel).items()
        if name.startswith("test_") and _uses_cases(test)
    ]
    assert len(ours) == PEFT_CASE_TESTS
    kept = [name for name in ours if vars(TestPeftCustomModel).get(name, _suite.TestPeftCustomModel.__dict__[name])]
    assert len(kept) == PEFT_CASE_TESTS  # none of them dropped (None) by the overrides
    per_tuner = {
        label: sum(case[0].rsplit(" ", 1)[1] == label for case in CASES)
        for label in ("LoRA", "ASLoRA", "ShareLoRA", "TiedLoRA")
    }
    assert per_tuner == {"LoRA": 5, "ASLoRA": 5, "ShareLoRA": 5, "TiedLoRA": 5}
    assert set(SKIPS) == {"test_parameters_after_loading_model"}  # the one skip, for Tied-LoRA, with PEFT's own reason
