"""The one reader of JSON files others may have written: every bad file a ValueError naming it."""

import pytest

from aslora.json_file import read_json


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe{}", "is not UTF-8 text, so not thing"),
        (b"{'a': 1}", r"is not valid JSON, so not thing \(Expecting property name"),
        (b"[" * 100_000 + b"]" * 100_000, "(nested too deeply to parse|is not valid JSON), so not thing"),
        (b"[1, 2]", "is not thing: its top level is a list, not a dict"),
        (b" " * 2**20 + b"{}", r"is 1048578 bytes, more than any thing file \(1048576 bytes at most\)"),
    ],
)
def test_a_bad_file_is_refused_naming_it(tmp_path, content, message):
    path = tmp_path / "f.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        read_json(path, "thing", expect=dict, max_bytes=2**20)
    assert str(path) in str(error.value)


def test_missing_and_unreadable_files_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"nope.json is missing"):
        read_json(tmp_path / "nope.json")
    with pytest.raises(ValueError, match="is unreadable"):
        read_json(tmp_path)  # a folder


def test_a_good_file_reads_back_exactly(tmp_path):
    path = tmp_path / "f.json"
    path.write_text('{"a": [1, 2.5, "é", null, true], "b": {"c": 1e300}}', encoding="utf-8")
    assert read_json(path, expect=dict) == {"a": [1, 2.5, "é", None, True], "b": {"c": 1e300}}
