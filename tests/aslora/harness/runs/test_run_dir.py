"""A run directory trusts nothing (issue 37): no write or delete follows a link, checkpoint folders
and manifests are parsed as untrusted input, and what is refused changes nothing anywhere."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from aslora.harness.runs.run import run
from aslora.harness.runs.run_dir import check_no_links, links_in, write_text_atomic
from aslora.harness.state import checkpoint as ckpt
from hydra_glue import compose_run


def _snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry under ``root`` (links by their target, files by their bytes), following no link."""
    out: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        key = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[key] = "-> " + str(path.readlink())
        elif path.is_file():
            out[key] = path.read_bytes()
        else:
            out[key] = "dir"
    return out


@pytest.mark.parametrize(
    "linked", ["train.log", "config.yaml", "metrics.csv", "adapter_last", "checkpoints", "eval.json"]
)
@pytest.mark.parametrize("resume", [True, False])
def test_a_link_in_the_run_directory_is_refused_before_anything_is_written(linked, resume, tmp_path):
    container, choices = compose_run(
        [
            "debug=smoke",
            f"resume={str(resume).lower()}",
            "checkpoint.every_steps=4",
            f"experiments_dir={tmp_path / 'exp'}",
        ]
    )
    run_dir = tmp_path / "exp" / container["run_name"]
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.csv").write_text("step,loss\n1,0.5\n") if linked != "metrics.csv" else None
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious.txt").write_text("keep me")
    (outside / "step-000000004").mkdir()  # what a linked checkpoints/ would have deleted
    target = outside if linked in ("adapter_last", "checkpoints") else outside / "precious.txt"
    (run_dir / linked).symlink_to(target)
    before_outside, before_run = _snapshot(outside), _snapshot(run_dir)

    with pytest.raises(ValueError, match=rf"holds symbolic links \('[^']*{linked}'.*run under another run_name"):
        run(container, choices)
    assert _snapshot(outside) == before_outside and _snapshot(run_dir) == before_run


def test_evaluate_refuses_a_linked_eval_file_and_a_linked_out(tmp_path):
    from aslora.harness.measuring.evaluation import evaluate_saved
    from hydra_glue import group_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text("{}")
    outside = tmp_path / "outside.json"
    outside.write_text("keep me")
    (run_dir / "eval.json").symlink_to(outside)
    with pytest.raises(ValueError, match=r"holds symbolic links \('[^']*eval.json'"):
        evaluate_saved(run=str(run_dir))
    link = tmp_path / "out.json"
    link.symlink_to(outside)
    with pytest.raises(ValueError, match=r"out='[^']*out.json' is a symbolic link"):
        evaluate_saved(
            adapter_dir=str(tmp_path),
            task=group_config("task", "rt_polarity"),
            model=group_config("model", "minilm-l6"),
            out=str(link),
        )
    assert outside.read_text() == "keep me"


def test_an_atomic_write_replaces_a_link_and_never_writes_through_it(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    path = tmp_path / "run" / "config.yaml"
    path.parent.mkdir()
    path.symlink_to(outside)
    write_text_atomic(path, "new")
    assert outside.read_text() == "keep me" and not path.is_symlink() and path.read_text() == "new"
    assert sorted(p.name for p in path.parent.iterdir()) == ["config.yaml"]  # no temporary file left


def test_links_are_found_at_any_depth_and_the_run_directory_itself(tmp_path):
    (tmp_path / "run" / "adapter" / "deep").mkdir(parents=True)
    (tmp_path / "run" / "adapter" / "deep" / "w.safetensors").symlink_to(tmp_path)
    assert links_in(tmp_path / "run") == [tmp_path / "run" / "adapter" / "deep" / "w.safetensors"]
    (tmp_path / "alias").symlink_to(tmp_path / "run")
    assert links_in(tmp_path / "alias") == [tmp_path / "alias"]
    check_no_links(tmp_path / "missing")  # a run directory that does not exist yet holds no link


def _checkpoint(directory: Path, step: int = 3) -> Path:
    tmp = ckpt.begin(directory, step)
    ckpt.write_rng(tmp, 0)
    return ckpt.commit(
        tmp,
        directory,
        step,
        {"step": step, "epoch": 0, "batches_done": step, "epoch_losses": [], "model": {}, "optimizer": {},
         "scheduler": {}, "result": {}},
        keep_last=5,
    )  # fmt: skip


def _rewrite_manifest(checkpoint: Path, manifest) -> None:
    data = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    (checkpoint / ckpt.MANIFEST).write_bytes(data)


@pytest.mark.parametrize(
    "manifest, problem",
    [
        ([1, 2], "not a mapping"),
        ({"step": 3, "files": []}, "not a mapping"),
        ({"step": 3}, "not a mapping"),
        ({"step": "3", "files": {"a": "0" * 64}}, "step '3' is not the folder's"),
        ({"step": 7, "files": {"a": "0" * 64}}, "step 7 is not the folder's"),
        ({"step": 3, "files": {"../../outside": "0" * 64}}, r"outside the checkpoint or oddly named: '../../outside'"),
        ({"step": 3, "files": {"/etc/passwd": "0" * 64}}, "outside the checkpoint"),
        ({"step": 3, "files": {"ok\n[ALERT] forged line": "0" * 64}}, r"oddly named: 'ok\\n\[ALERT\] forged line'"),
        ({"step": 3, "files": {"state.json": 5}}, "SHA-256 of 'state.json' is not one"),
        (b"\xff\xfe not utf-8", "unreadable manifest"),
        (b"[" * 100_000, "unreadable manifest"),
    ],
)
def test_a_malformed_manifest_skips_its_checkpoint_with_an_escaped_warning(manifest, problem, tmp_path, caplog):
    good = _checkpoint(tmp_path, step=2)
    bad = _checkpoint(tmp_path, step=3)
    _rewrite_manifest(bad, manifest)
    with caplog.at_level(logging.WARNING, logger="aslora"):
        assert ckpt.latest_valid(tmp_path) == good
    warning = next(r.getMessage() for r in caplog.records if "skipping checkpoint" in r.getMessage())
    assert "\n" not in warning  # a key holding a newline cannot forge a log line
    import re

    assert re.search(problem, warning), warning


def test_stray_entries_under_checkpoints_are_skipped_with_a_warning_never_read_or_deleted(tmp_path, caplog):
    directory = tmp_path / "checkpoints"
    good = _checkpoint(directory, step=3)
    for stray in ("step-abc", "step-", "notes", "step-00000000000000000000001"):
        (directory / stray).mkdir()
        (directory / stray / "keep.txt").write_text("mine")
    (directory / "step-000000009").symlink_to(tmp_path)  # a link named like a checkpoint
    with caplog.at_level(logging.WARNING, logger="aslora"):
        assert ckpt.list_checkpoints(directory) == [good]
        assert ckpt.latest_valid(directory) == good
    assert sum("not a checkpoint this code writes" in r.getMessage() for r in caplog.records) >= 5
    for step in (4, 5, 6):  # pruning to keep_last=1 deletes older real checkpoints only
        tmp = ckpt.begin(directory, step)
        ckpt.write_rng(tmp, 0)
        ckpt.commit(tmp, directory, step, {"step": step}, keep_last=1)
    assert all((directory / s / "keep.txt").read_text() == "mine" for s in ("step-abc", "step-", "notes"))
    assert [p.name for p in ckpt.list_checkpoints(directory)] == ["step-000000006"]
