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
    path = {m: ROOT / m.replace(".", "/") for m in cited}  # a module, or a package run by its __main__
    missing = sorted(
        m for m in cited if not (path[m].with_suffix(".py").is_file() or (path[m] / "__main__.py").is_file())
    )
    assert not missing, f"the docs tell a reader to run modules that do not exist: {missing}"


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(path):
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    missing = [link for link in local if not (path.parent / link).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to files that do not exist: {missing}"


# cited paths that are not in the repository, each for a reason
NOT_TRACKED = {
    "configs/local/default.yaml": "this machine's own overrides, git-ignored (configs/local/README.md)",
    "tests/test_custom_models.py": "PEFT's own suite, in the pinned PEFT's sdist (make install unpacks it)",
}
# file names tests write into their tmp_path (a table, a report), not repository files
WRITTEN_BY_TESTS = {"alpaca_llama-2-7b.md", "smoke_minilm-l6.md", "spread.md", "x.md"}


def test_every_file_cited_in_code_and_docs_exists():
    """A path in a docstring, comment or doc (``aslora/…``, ``scripts/…``, ``configs/…``, ``docs/…``,
    ``results/…``) names a tracked file, and a bare ``*.md`` name one the repository has: a reader
    who follows a reference finds it (two docstrings once cited a style guide kept outside it)."""
    import subprocess

    tracked = set(
        subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    )
    names = {Path(t).name for t in tracked}
    sources = [f for f in tracked if f.endswith((".py", ".md", ".yaml")) or f == "Makefile"]
    sources = [f for f in sources if not f.startswith("results/site/")]
    path = re.compile(
        r"(?<![\w/.-])((?:aslora|scripts|configs|docs|tests|results|\.ci)/[\w./-]*\w\.(?:py|yaml|md|json|csv|png|txt|html))\b"
    )
    bare = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")
    missing = {}
    for source in sources:
        text = (ROOT / source).read_text()
        for cited in path.findall(text):
            if cited not in tracked and cited not in NOT_TRACKED:
                missing.setdefault(cited, source)
        for cited in bare.findall(text):
            if cited not in names and cited not in WRITTEN_BY_TESTS:
                missing.setdefault(cited, source)
    assert len(sources) > 100
    assert not missing, f"cited files that do not exist (cited → where): {missing}"


def test_readme_s_layout_names_every_module():
    """README's layout map lists each module of the harness and of scripts/ (a module added or
    renamed without it, or a name the map keeps after the module went, fails here)."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("aslora/            the method") :]
    block = block[: block.index("```")]
    words = set(re.findall(r"[A-Za-z_]+", block))
    rooms = [
        f"{top}/{p.name}"
        for top in ("aslora/harness", "scripts")
        for p in sorted((ROOT / top).iterdir())
        if p.is_dir() and (p / "__init__.py").is_file()
    ]
    assert {"scripts/grids", "scripts/reports", "scripts/bench", "aslora/harness/runs"} <= set(rooms)
    for top in ("aslora/harness", "scripts"):
        loose = [p.name for p in (ROOT / top).glob("*.py") if p.stem != "__init__"]
        assert not loose, f"modules outside a room in {top}: {loose}"
    for room in rooms:
        modules = {p.stem for p in (ROOT / room).glob("*.py") if p.stem not in ("__init__", "__main__")}
        assert not modules - words, f"README's layout omits {room}: {sorted(modules - words)}"
        first = room.split("/")[-1] + "/" if room.startswith("aslora") else room + "/"
        line = next(line for line in block.splitlines() if line.split() and line.split()[0] == first)
        listed = set(re.sub(r"\([^)]*\)", "", line).replace("·", " ").split()[1:])
        assert listed <= modules, f"README's {room} line lists what is not a module there: {sorted(listed - modules)}"
