"""Evaluate a saved adapter on its task's held-out splits, and predict on given texts or prompts.

    python evaluate.py run=experiments/<run_name>                           # the best epoch's adapter: the report's scores
    python evaluate.py run=experiments/<run_name> epoch=last                # the weights training ended with
    python evaluate.py run=experiments/<run_name> 'texts=["a moving, funny film", "two hours I want back"]'
    python evaluate.py adapter_dir=path/to/adapter task=rt_polarity model=minilm-l6
    python evaluate.py run=experiments/<instruct run> 'prompts=["What is your name?"]'

Keys are ``key=value`` (OmegaConf's command-line syntax, as train.py's): run, adapter_dir, task,
model, hub (default false), texts, prompts, out, max_eval_examples (score the first N of each split),
epoch (best | last, with run=). Writes ``eval.json`` in the run (or adapter) directory unless ``out=``.
"""

from __future__ import annotations

import logging
import os
import sys

KEYS = {
    "run": None,
    "adapter_dir": None,
    "task": None,
    "model": None,
    "hub": False,
    "texts": [],
    "prompts": [],
    "out": None,
    "max_eval_examples": None,
    "epoch": "best",
}


def main(argv: list[str] | None = None) -> int:
    from omegaconf import OmegaConf

    args = OmegaConf.to_container(OmegaConf.from_dotlist(list(sys.argv[1:] if argv is None else argv)))
    unknown = sorted(set(args) - set(KEYS))
    if unknown:
        raise SystemExit(f"unknown key(s) {unknown}; evaluate.py takes {sorted(KEYS)}")
    options = {**KEYS, **args}
    if not options["hub"]:  # before transformers is imported: it reads this once
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from aslora.harness.measuring.evaluation import evaluate_saved, format_summary

    try:
        if options["adapter_dir"] is not None:  # a bare adapter: its model's and task's settings from the configs
            from hydra_glue import group_config

            for group in ("model", "task"):
                if options[group] is not None:
                    options[group] = group_config(group, str(options[group]))
        result = evaluate_saved(**options)
    except ValueError as error:
        raise SystemExit(f"evaluate.py: {error}") from None
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
