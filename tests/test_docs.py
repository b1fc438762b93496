"""The docs cite only what exists: every test file a claim names, every ``make`` target and every
``python -m scripts.…`` module README and docs/ tell a reader to run (issue 40: a claim is a test)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "results" / "README.md"]
# words that follow "make" in prose, not targets ("make another grid", "make its …")
PROSE = {"another", "its", "groups", "sure", "the", "a", "it", "them", "this", "one"}


def _text() -> str:
    return "\n".join(path.read_text() for path in DOCS)


def _targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([a-zA-Z][a-zA-Z0-9_-]*):", makefile, flags=re.MULTILINE))


def test_every_cited_test_file_exists():
    cited = set(re.findall(r"\b((?:tests/[\w/]+/)?test_\w+\.py)\b", _text()))
    assert cited, "the docs cite no test at all"
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")}
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_name.setdefault(f.rsplit("/", 1)[-1], []).append(f)
    missing = [c for c in sorted(cited) if (c not in files if "/" in c else c not in by_name)]
    assert not missing, f"the docs cite test files that do not exist: {missing}"


def test_every_cited_test_function_exists():
    """``tests/….py::test_name`` (the untrusted-files table cites one per row): the function is there."""
    cited = set(re.findall(r"\b(tests/[\w/]+\.py)::(test_\w+)", _text()))
    assert len(cited) >= 15, "the untrusted-files table cites its tests by name"
    missing = [
        f"{f}::{name}"
        for f, name in sorted(cited)
        if not (ROOT / f).is_file() or not re.search(rf"^def {name}\(", (ROOT / f).read_text(), flags=re.MULTILINE)
    ]
    assert not missing, f"the docs cite test functions that do not exist: {missing}"


def test_every_cited_make_target_exists():
    targets = _targets()
    cited = {t.rstrip("-") for t in re.findall(r"`make ([a-z][a-z0-9-]*)", _text())}
    missing = sorted(t for t in cited - PROSE if t not in targets and not any(x.startswith(t) for x in targets))
    assert not missing, f"the docs name make targets the Makefile lacks: {missing}"


def test_every_cited_script_module_exists():
    cited = set(re.findall(r"python -m (scripts(?:\.\w+)+)", _text()))
    missing = sorted(m for m in cited if not (ROOT / (m.replace(".", "/") + ".py")).is_file())
    assert not missing, f"the docs tell a reader to run modules that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    missing = [link for link in local if not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to files that do not exist: {missing}"
