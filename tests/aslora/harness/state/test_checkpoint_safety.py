"""Nothing we load runs code (issue 23): checkpoints are JSON + safetensors, a pickled one is
refused, and every malformed checkpoint file is refused naming the file, with nothing restored."""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from aslora.harness.state import checkpoint as ckpt
from aslora.harness.state import safe_state

ROOT = Path(__file__).resolve().parents[4]


class _Payload:
    """Unpickling this creates a file: the side effect the tests check never happens."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _state(**extra) -> dict:
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return {
        "fingerprint": "abc",
        "step": 3,
        "epoch": 1,
        "batches_done": 3,
        "epoch_losses": [0.7, 0.5, float("nan")],
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "result": {"epochs": [{"epoch": 1, "val": {"accuracy": 0.5}, "test": None}], "best_epoch": 1},
        **extra,
    }


def _write(directory: Path, state: dict, step: int = 3) -> Path:
    tmp = ckpt.begin(directory, step)
    ckpt.write_rng(tmp, 0)
    return ckpt.commit(tmp, directory, step, state, keep_last=5)


def _rehash(checkpoint: Path) -> None:
    """What an attacker with write access does: make the manifest match the files again."""
    manifest = {
        "step": 3,
        "files": {
            p.name: ckpt._sha256(p) for p in sorted(checkpoint.iterdir()) if p.is_file() and p.name != ckpt.MANIFEST
        },
    }
    (checkpoint / ckpt.MANIFEST).write_text(json.dumps(manifest))


def test_a_checkpoint_round_trips_exactly_through_json_and_safetensors(tmp_path):
    state = _state()
    random.seed(5), np.random.seed(5), torch.manual_seed(5)
    checkpoint = _write(tmp_path, state)
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        "manifest.json",
        "rng-rank0.json",
        "rng-rank0.safetensors",
        "state.json",
        "state.safetensors",
    ]
    loaded = ckpt.load_state(checkpoint)
    assert loaded["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    for index, moments in state["optimizer"]["state"].items():
        assert all(torch.equal(v, loaded["optimizer"]["state"][index][k]) for k, v in moments.items())
    assert all(torch.equal(v, loaded["model"][k]) for k, v in state["model"].items())
    assert loaded["scheduler"] == state["scheduler"] and loaded["result"] == state["result"]
    assert loaded["epoch_losses"][:2] == [0.7, 0.5] and np.isnan(loaded["epoch_losses"][2])
    expected = (random.random(), np.random.rand(), torch.rand(1))
    ckpt.set_rng_state(ckpt.load_rng(checkpoint, 0))  # the states written before those draws
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


def test_state_that_needs_pickle_is_refused_when_written(tmp_path):
    with pytest.raises(TypeError, match=r"result\.fn: a function cannot be stored without pickle"):
        safe_state.split({"result": {"fn": lambda: 1}})


def test_a_pickled_checkpoint_is_refused_and_its_code_never_runs(tmp_path):
    checkpoint = _write(tmp_path / "checkpoints", _state())
    sentinel = tmp_path / "pwned"
    (checkpoint / ckpt.LEGACY_STATE).write_bytes(pickle.dumps(_Payload(sentinel)))
    _rehash(checkpoint)  # the manifest cannot tell: it sits in the same folder
    assert ckpt.latest_valid(tmp_path / "checkpoints") == checkpoint
    with pytest.raises(ValueError, match=r"older pickled format.*resume=false.*checkpoint.allow_pickle=true"):
        ckpt.check_resumable(tmp_path / "checkpoints", "abc")
    with pytest.raises(ValueError, match="older pickled format"):
        ckpt.load_state(checkpoint)
    # even opted in, the unpickler is torch's restricted one: it refuses to call `open`
    with pytest.raises(pickle.UnpicklingError):
        ckpt.load_state(checkpoint, allow_pickle=True)
    assert not sentinel.exists()


@pytest.mark.parametrize("pickled", ["rng", "state", "both"])
def test_resume_from_a_tampered_checkpoint_stops_before_loading_and_runs_nothing(pickled, tmp_path):
    """The run itself (``run`` is what train.py calls), with a pickle where a resume reads one: the
    RNG file alone, the state alone, or both — each refused before the run writes anything."""
    from aslora.harness.runs.run import run
    from hydra_glue import compose_run

    container, choices = compose_run(
        ["debug=smoke", "adapter=aslora", "checkpoint.every_steps=3", "resume=true", f"experiments_dir={tmp_path}"]
    )
    name = container["run_name"]
    checkpoint = _write(tmp_path / name / "checkpoints", _state())
    sentinel = tmp_path / "pwned"
    if pickled in ("rng", "both"):
        for stale in checkpoint.glob("rng-rank0.*"):
            stale.unlink()
        (checkpoint / "rng-rank0.pt").write_bytes(pickle.dumps(_Payload(sentinel)))
    if pickled in ("state", "both"):
        (checkpoint / ckpt.LEGACY_STATE).write_bytes(pickle.dumps(_Payload(sentinel)))
    _rehash(checkpoint)
    with pytest.raises(ValueError, match="older pickled format"):
        run(container, choices)
    assert not sentinel.exists() and not (tmp_path / name / "report.json").exists()
    assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["checkpoints"]  # nothing else written


def test_a_genuine_pickled_checkpoint_of_the_old_format_loads_only_when_allowed(tmp_path):
    old = {"step": 3, "model": {"w": torch.ones(2)}, "rng": np.random.get_state(), "python": random.getstate()}
    checkpoint = tmp_path / "step-000000003"
    checkpoint.mkdir()
    torch.save(old, checkpoint / ckpt.LEGACY_STATE)
    with pytest.raises(ValueError, match="allow_pickle"):
        ckpt.load_state(checkpoint)
    loaded = ckpt.load_state(checkpoint, allow_pickle=True)
    assert loaded["step"] == 3 and torch.equal(loaded["model"]["w"], old["model"]["w"])
    assert (loaded["rng"][1] == old["rng"][1]).all() and loaded["python"] == old["python"]


def test_a_checkpoint_from_another_runs_configuration_is_refused(tmp_path):
    _write(tmp_path, _state())
    assert ckpt.check_resumable(tmp_path, "abc") == tmp_path / "step-000000003"
    with pytest.raises(ValueError, match="written by a run with another configuration.*resume=false"):
        ckpt.check_resumable(tmp_path, "another")


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _edit_rng_array(checkpoint: Path, dtype: str) -> None:
    """Give the NumPy RNG state's key array another dtype (what a few bytes' edit of the file does)."""
    _edit_json(checkpoint / "rng-rank0.json", lambda s: s["numpy"]["__tuple__"][1].update(dtype=dtype))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda c: (c / "state.json").write_text("{not json"), r"state.json is not valid JSON"),
        (lambda c: (c / "state.json").write_bytes(b"\xff\xfe\x00"), r"state.json is not UTF-8 text"),
        (
            lambda c: (c / "state.safetensors").write_bytes((c / "state.safetensors").read_bytes()[:40]),
            r"state.safetensors is not a readable safetensors file",
        ),
        (
            lambda c: (c / "state.safetensors").write_bytes(b"PK\x03\x04 a zip, as torch.save writes"),
            r"state.safetensors is not a readable safetensors file",
        ),
        (
            lambda c: (c / "state.json").write_text(json.dumps({"step": {"__tensor__": "t999"}})),
            r"names tensor 't999', which its tensor file does not hold",
        ),
        (lambda c: (c / "state.json").write_text(json.dumps({"step": 1})), r"lacks \['epoch'"),
        (lambda c: (c / "rng-rank0.json").write_text(json.dumps({"python": 1})), r"does not hold the four RNG states"),
        # parsers refuse, never crash (issue 37)
        (lambda c: (c / "state.json").write_text("[" * 100_000 + "]" * 100_000), r"state.json is nested too deeply"),
        (lambda c: (c / "state.json").write_text("[" * 40 + "]" * 40), r"state.json: nested deeper than 32 levels"),
        (
            lambda c: _edit_json(c / "state.json", lambda s: s.update(step={"__tensor__": "t0", "x": 1})),
            r"other fields \['x'\]",
        ),
        (lambda c: _edit_json(c / "state.json", lambda s: s.update(step={"__tuple__": 5})), r"must hold a list"),
        (
            lambda c: _edit_json(c / "state.json", lambda s: s.update(step={"__dict__": [[[1], 2]]})),
            r"malformed dict entry",
        ),
        (
            lambda c: _edit_json(c / "state.json", lambda s: s.update(step={"__tuple__": [], "__dict__": []})),
            r"several type markers",
        ),
        (lambda c: _edit_json(c / "state.json", lambda s: s.update(step={"__float__": "1e999"})), r"malformed float"),
        # a 9-byte edit of the NumPy state's dtype must not cost hundreds of MB: only fixed-size numbers
        (lambda c: _edit_rng_array(c, "<U99999999"), r"array entry with dtype '<U99999999'"),
        (lambda c: _edit_rng_array(c, "|O"), r"array entry with dtype '\|O'"),
        (lambda c: _edit_rng_array(c, "|u1"), r"holds values a \|u1 cannot"),
        (
            lambda c: _edit_json(c / "rng-rank0.json", lambda s: s["python"]["__tuple__"].__setitem__(0, 2)),
            r"rng-rank0.json: python: not the state random.getstate\(\) gives",
        ),
        (
            lambda c: _edit_json(c / "rng-rank0.json", lambda s: s["numpy"]["__tuple__"].__setitem__(2, 10_000)),
            r"rng-rank0.json: numpy: not the state",
        ),
    ],
)
def test_malformed_checkpoint_files_are_refused_naming_the_file(tmp_path, damage, message):
    checkpoint = _write(tmp_path, _state())
    damage(checkpoint)
    _rehash(checkpoint)  # past the manifest: the loader itself must refuse
    with pytest.raises(ValueError, match=message):
        ckpt.load_state(checkpoint)
        ckpt.load_rng(checkpoint, 0)


def test_a_checkpoint_that_does_not_fit_the_model_restores_nothing():
    from aslora.harness.state.trained_state import restore_model

    model = torch.nn.Linear(3, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cases = [
        ({"weight": torch.zeros(2, 3), "bias": torch.zeros(5)}, "shape or dtype differs for"),
        (
            {"weight": torch.zeros(2, 3), "bias": torch.zeros(2), "extra": torch.zeros(1)},
            r"unexpected keys \['extra'\]",
        ),
        ({"weight": torch.zeros(2, 3)}, r"missing keys \['bias'\]"),  # strict: a key left out is not kept as is
        ({"weight": torch.full((2, 3), float("nan")), "bias": torch.zeros(2)}, "non-finite values"),
        ({"weight": torch.zeros(2, 3, dtype=torch.float64), "bias": torch.zeros(2)}, "shape or dtype differs"),
        ({"weight": [[0.0] * 3] * 2, "bias": torch.zeros(2)}, "shape or dtype differs for \\['weight list"),
    ]
    for saved, message in cases:
        with pytest.raises(ValueError, match=message):
            restore_model(model, {"model": saved})
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_no_load_path_of_ours_unpickles():
    """No ``weights_only=False`` and no ``pickle.load`` anywhere in the package, scripts or entry points."""
    sources = [
        *ROOT.joinpath("aslora").rglob("*.py"),
        *ROOT.joinpath("scripts").rglob("*.py"),
        ROOT / "train.py",
        ROOT / "evaluate.py",
        *ROOT.joinpath("examples").glob("*.py"),
    ]
    offenders = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if re.search(r"weights_only\s*=\s*False|pickle\.loads?\(|torch\.load\((?!.*weights_only=True)", line)
    ]
    assert offenders == []
