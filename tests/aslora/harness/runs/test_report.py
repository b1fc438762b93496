"""report.json is validated wherever it is read (issue 37): a malformed one is refused naming the
file and the field, and the collector writes nothing when any report it would read is refused."""

from __future__ import annotations

import json

import pytest

from aslora.harness.runs.report import DONE_FIELDS, grid_of, is_done, load_report, read_report


def _report() -> dict:
    """A finished report holding exactly the fields readers use."""
    report: dict = {"status": "done"}
    values = {int: 1, str: "x", float: 0.5}
    for dotted, kind in DONE_FIELDS.items():
        node = report
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if last not in node:
            first = kind[0] if isinstance(kind, tuple) else kind
            node[last] = {} if first is dict else values[first]
    return report


def test_a_complete_report_loads(tmp_path):
    path = tmp_path / "report.json"
    path.write_text(json.dumps(_report()))
    assert load_report(path) == _report() and is_done(path)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[1, 2]", "its top level is a list, not a dict"),
        (b"\xff\xfe", "is not UTF-8 text, so not a report"),
        (b"{" * 10 + b"[" * 100_000, r"(nested too deeply to parse|is not valid JSON), so not a report"),
        (b'{"status": "running"}', r"not a finished run's report \(status 'running'\)"),
        (json.dumps({**_report(), "seed": "1"}).encode(), r"field 'seed' is str, not int"),
        (json.dumps({**_report(), "seed": True}).encode(), r"field 'seed' is bool, not int"),
        (json.dumps({**_report(), "best": {"epoch": 1}}).encode(), r"field 'best.metric' is missing, not int or float"),
        (json.dumps({**_report(), "config": []}).encode(), r"field 'config' is list, not dict"),
    ],
)
def test_a_malformed_report_is_refused_naming_the_file_and_field(content, message, tmp_path):
    path = tmp_path / "report.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        load_report(path)
    assert str(path) in str(error.value)
    read_report(path)  # the lenient reader (is a run done?) never raises


def test_the_collector_refuses_a_malformed_finished_report_and_writes_nothing(tmp_path, capsys):
    from scripts.reports import collect_results

    good, bad = tmp_path / "exp" / "good", tmp_path / "exp" / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    (bad / "report.json").write_text(json.dumps({"status": "done", "run_name": "bad"}))
    out = tmp_path / "results" / "runs.csv"
    out.parent.mkdir()
    out.write_text("kept\n")
    code = collect_results.main(["--experiments", str(tmp_path / "exp"), "--out", str(out)])
    assert code == 1 and out.read_text() == "kept\n" and sorted(p.name for p in out.parent.iterdir()) == ["runs.csv"]
    assert "bad/report.json" in capsys.readouterr().err


def test_a_scripts_own_outputs_do_not_make_the_tree_dirty_but_code_does(tmp_path, monkeypatch):
    """``environment(outputs=...)``: what ``make bench`` rewrites under results/ leaves the tree
    clean; a changed code file still makes it dirty, and only the code is in the diff. git runs in a
    subdirectory, as it does from the package, so the pathspecs must be taken from the top."""
    import subprocess

    from aslora.harness.runs import report as report_module

    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "results").mkdir()
    (repo / "pkg" / "code.py").write_text("a = 1\n")
    (repo / "results" / "out.json").write_text("{}\n")

    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=repo / "pkg", capture_output=True, text=True, check=True)
        return out.stdout.strip()

    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git("-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    monkeypatch.setattr(report_module, "_git", git)

    (repo / "results" / "out.json").write_text('{"new": 1}\n')
    assert report_module.environment()["git_dirty"] is True
    assert report_module.environment(outputs=("results",))["git_dirty"] is False

    (repo / "pkg" / "code.py").write_text("a = 2\n")
    env = report_module.environment(outputs=("results",))
    assert env["git_dirty"] is True
    assert "pkg/code.py" in env["git_diff"] and "out.json" not in env["git_diff"]


@pytest.mark.parametrize(
    ("config", "run_name", "grid"),
    [
        ({"run_prefix": "smalldata-depth_"}, "smalldata-depth_mpnet-base_rt_polarity_lora_s3", "smalldata-depth"),
        # A lone run's name starts with its model, not a grid: the config, not the name, decides.
        ({"run_prefix": ""}, "minilm-l6_rt_polarity_lora_s1", "single"),
        ({}, "protocol_minilm-l6_sst2_lora_s1", "single"),
    ],
)
def test_a_runs_grid_is_read_from_its_config_never_from_its_name(config, run_name, grid):
    assert grid_of({"config": config, "run_name": run_name}) == grid
