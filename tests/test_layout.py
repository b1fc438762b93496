"""The test tree mirrors the code: tests/<package>/… holds the tests of <package>/…; the tests of the
entry points (train.py, evaluate.py, configs/, examples/) and of the GPU sit at the top."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def test_every_test_folder_mirrors_a_package_of_the_code():
    folders = [p for p in TESTS.rglob("*") if p.is_dir() and p.name not in {"fixtures", "__pycache__"}]
    folders = [p for p in folders if "fixtures" not in p.relative_to(TESTS).parts]
    assert folders, "no test folders"
    for folder in folders:
        package = ROOT / folder.relative_to(TESTS)
        assert (package / "__init__.py").is_file(), f"tests/{folder.relative_to(TESTS)} mirrors no package"
        assert (folder / "__init__.py").is_file(), f"{folder} lacks __init__.py (test modules would collide)"
