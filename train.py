"""Train and evaluate one adapter on one task: compose → build → adapt → fit → evaluate → report.

    python train.py                                   # MiniLM-L6 + ASLoRA on rt_polarity, offline
    python train.py task=sst2 adapter=aslora model=roberta-base hub=true
    python train.py -m adapter=lora,aslora seed=1,2,3   # a sweep: one report per job

Returns the best validation metric, for Hydra sweepers.
"""

from __future__ import annotations

import logging
import os
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hydra_glue import register_resolvers

log = logging.getLogger("aslora")


register_resolvers()


def configure_environment(hub: bool, wandb_mode: str) -> None:
    # Must run before transformers / datasets / huggingface_hub are imported: they read these once.
    if hub:
        os.environ.pop("HF_HUB_OFFLINE", None)
        os.environ.pop("HF_DATASETS_OFFLINE", None)
    else:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
    os.environ["WANDB_MODE"] = wandb_mode
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    container = OmegaConf.to_container(cfg, resolve=True)
    configure_environment(bool(container.get("hub")), str((container.get("wandb") or {}).get("mode", "disabled")))
    from aslora.harness.runs.run import RunRefused, run  # imports transformers: after the environment is set

    hydra_cfg = HydraConfig.get()
    choices = {k: v for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra/")}
    try:
        return run(container, choices, swept=swept_keys(hydra_cfg), overrides=list(hydra_cfg.overrides.task))
    except RunRefused as refused:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        # a refusal of the input reads as one: its message alone, exit 1 (a bug keeps its traceback)
        print(f"error: {refused}\n(the traceback: HYDRA_FULL_ERROR=1 python train.py …)", file=sys.stderr)
        sys.exit(1)


def swept_keys(hydra_cfg: DictConfig) -> list[str]:
    """The keys of this job's overrides that name the run (the ones joined into its name: every
    override but ``hydra.job.config.override_dirname.exclude_keys``). The report records them with
    their resolved values as the run's ``variant``, so nothing reads them back out of the name."""
    exclude = set(hydra_cfg.job.config.override_dirname.exclude_keys)
    keys = {override.split("=", 1)[0].lstrip("+~") for override in hydra_cfg.overrides.task}
    return sorted(keys - exclude)


if __name__ == "__main__":
    main()
