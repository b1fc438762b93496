"""Function-local imports buy start-up time, or they go: the harness's run, settings and preflight
path loads none of the heavy data and plotting libraries, and ``import aslora`` none of the harness."""

import subprocess
import sys

HEAVY = ("datasets", "matplotlib")


def _loaded(code: str) -> dict[str, bool]:
    probe = f"import sys\n{code}\nprint([m in sys.modules for m in {HEAVY!r}])"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return dict(zip(HEAVY, eval(out.strip().splitlines()[-1]), strict=True))


def test_the_run_path_loads_no_data_or_plotting_library():
    loaded = _loaded(
        "import aslora.harness.runs.run, aslora.harness.runs.settings, aslora.harness.measuring.evaluation"
    )
    assert not any(loaded.values()), loaded


def test_import_aslora_loads_no_harness():
    out = subprocess.run(
        [sys.executable, "-c", "import sys, aslora; print(any(m.startswith('aslora.harness') for m in sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "False"
