"""Compose every shipped model × task × adapter combination and validate it, loading nothing.

    python -m scripts.validate_configs           # exit 1 and list every problem if any

Checks: the config composes and resolves; RunSettings accepts it (types, ranges, unknown keys);
the adapter config builds; an ASLoRA merge schedule given in steps fits the run.
"""

from __future__ import annotations

import itertools
import sys

from scripts.compose import compose_run, options


def main() -> int:
    from aslora.settings import RunSettings

    failures = []
    combos = list(itertools.product(options("model"), options("task"), options("adapter")))
    for model, task, adapter in combos:
        overrides = [f"model={model}", f"task={task}", f"adapter={adapter}"]
        try:
            container, choices = compose_run(overrides)
            RunSettings.from_dict(container, choices).check_schedule_fits()
        except Exception as error:  # report every failing combination, not just the first
            failures.append(f"{' '.join(overrides)}: {type(error).__name__}: {error}")
    for line in failures:
        print(line)
    print(f"{len(combos) - len(failures)} of {len(combos)} combinations valid")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
