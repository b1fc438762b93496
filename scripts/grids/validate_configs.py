"""Compose every shipped model × task × adapter combination and validate it, loading nothing.

    python -m scripts.grids.validate_configs           # exit 1 and list every problem if any

Checks: the config composes and resolves; RunSettings accepts it (types, ranges, unknown keys);
the adapter config builds; an ASLoRA merge schedule given in steps fits the run. Encoder models ×
instruction-tuning tasks are not applicable (a causal LM needs a decoder): each must be *rejected*,
with an error naming the model, or the check fails.
"""

from __future__ import annotations

import itertools
import sys
from typing import Callable

from hydra_glue import composer, options


def main() -> int:
    combos = list(itertools.product(options("model"), options("task"), options("adapter")))
    with composer() as compose_run:
        return _validate(combos, compose_run)


def _validate(combos: list[tuple[str, str, str]], compose_run: Callable) -> int:
    from aslora.harness.inputs.data import TASKS
    from aslora.harness.runs.settings import RunSettings

    failures, not_applicable = [], 0
    for model, task, adapter in combos:
        overrides = [f"model={model}", f"task={task}", f"adapter={adapter}"]
        try:
            container, choices = compose_run(overrides)
            applicable = (
                TASKS[container["task"]["name"]].kind != "causal_lm"
                or container["model"].get("architecture") == "decoder"
            )
            if not applicable:
                not_applicable += 1
                try:
                    RunSettings.from_dict(container, choices)
                except ValueError as error:
                    if "needs a decoder" in str(error) and repr(container["model"]["name"]) in str(error):
                        continue
                    raise
                raise AssertionError("an encoder model was accepted for an instruction-tuning task")
            RunSettings.from_dict(container, choices).plan()
        except Exception as error:  # report every failing combination, not just the first
            failures.append(f"{' '.join(overrides)}: {type(error).__name__}: {error}")
    for line in failures:
        print(line)
    checked = len(combos) - not_applicable
    print(
        f"{checked - (len(failures))} of {checked} combinations valid "
        f"({not_applicable} encoder × instruction-task combinations rejected as they must be)"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
