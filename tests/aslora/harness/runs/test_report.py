"""report.json is validated wherever it is read (issue 37): a malformed one is refused naming the
file and the field, and the collector writes nothing when any report it would read is refused."""

from __future__ import annotations

import json

import pytest

from aslora.harness.runs.report import DONE_FIELDS, is_done, load_report, read_report


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
