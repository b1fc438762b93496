"""The grid rehearsal (issue 21): a grid's every job, exactly as ``make`` runs it, at tiny scale —
then ``collect``, the tables and the figures on the result — in a scratch folder that never mixes
with committed results. Any job that would fail on the real grid fails here, in minutes, on a CPU.

    python -m scripts.grids.rehearsal glue                  # make reproduce-glue's grids, every job (150 + 5 + 15)
    python -m scripts.grids.rehearsal alpaca                # make reproduce-alpaca's (9 jobs)
    python -m scripts.grids.rehearsal ablation              # an offline grid: real models and data, fewer examples
    python -m scripts.grids.rehearsal smalldata             # a staged grid: every stage, select and extend included
    python -m scripts.grids.rehearsal glue --seeds 1        # one seed of each (what CI runs)
    python -m scripts.grids.rehearsal glue --root /tmp/r hydra/launcher=parallel hydra.launcher.n_jobs=2

Only the scale changes. The grids are :data:`scripts.grids.catalog.GRIDS` — the same sweep configs, job
lists, recipes (lr, batch, epochs, length) and merge schedules. The model is the real architecture
shrunk: RoBERTa-base's config (12 layers) and LLaMA-2-7B's (32 layers, no chat template) at width
16, random weights and a byte-level BPE tokenizer trained here, saved as a local folder and loaded
through the same loader (``model.source=local``). The data are written in the Hub's exact schema
(GLUE's columns and splits, MNLI's ``validation_matched``/``validation_mismatched`` and the
unlabelled ``test`` splits; Alpaca's instruction/input/output) and read through ``task.local_dir``
(one folder per task and adapter). Each training set is as small as its
recipe allows: one batch, or — for a recipe whose merge schedule is pinned in steps (the ASLoRA
paper's MRPC row: T_s = 320, m = 240, 7 ties) — enough batches that the schedule fits, as it does on
the real data.

The staged grids (:data:`scripts.grids.catalog.STAGED`: the comparison protocol, its instruction suite, the
small-data suite) run stage by stage as their ``make`` targets do — lr grid, ``collect``, ``select``,
``extend``, the final arms (and the protocol's size curves) — in a scratch workspace
(:class:`scripts.grids.workspace.Workspace`), with their real models and data and fewer examples. Their
later stages' jobs come from the earlier stages' scores, so what ``select`` chooses at this scale is
meaningless; what the rehearsal shows is that every stage composes, trains, hands its files to the
next, and that the suite's report is made from the result.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import shutil
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import yaml

from aslora.harness.inputs.data import TRAIN_FRACTION
from hydra_glue import CONFIG_DIR, ROOT
from scripts.grids.catalog import GRIDS, STAGED, run_staged
from scripts.grids.catalog import run as run_grid

WORDS = "the cat sat on a mat while dogs ran far away and birds sang loud near old green hills".split()
WIDTH = 16


def _tokenizer(specials: list[str]):
    """A byte-level BPE tokenizer trained on :data:`WORDS` (the real models' tokenizers are on the Hub)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator([" ".join(WORDS)] * 4, trainer)
    return tokenizer


def build_roberta(folder: Path) -> None:
    """RoBERTa-base's configuration at width 16 (12 layers, 514 positions, its special-token ids)."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast, RobertaConfig, RobertaModel

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # RoBERTa's ids 0-4
    tokenizer = _tokenizer(specials)
    tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>",
        unk_token="<unk>", pad_token="<pad>", mask_token="<mask>", model_max_length=512,
    )  # fmt: skip
    config = RobertaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=WIDTH, num_hidden_layers=12, num_attention_heads=2,
        intermediate_size=2 * WIDTH, max_position_embeddings=514, pad_token_id=1, bos_token_id=0, eos_token_id=2,
    )  # fmt: skip
    _save(folder, RobertaModel(config), fast)


def build_llama(folder: Path) -> None:
    """LLaMA-2-7B's configuration at width 16 (32 layers, 4,096 positions), no chat template (a base model)."""
    from tokenizers import processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>"]  # LLaMA's ids 0-2
    tokenizer = _tokenizer(specials)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>", model_max_length=4096
    )
    config = LlamaConfig(
        vocab_size=tokenizer.get_vocab_size(), hidden_size=WIDTH, num_hidden_layers=32, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=2 * WIDTH, max_position_embeddings=4096, bos_token_id=1,
        eos_token_id=2,
    )  # fmt: skip
    _save(folder, LlamaForCausalLM(config), fast)


def _save(folder: Path, model, tokenizer) -> None:
    import torch

    torch.manual_seed(0)
    model.init_weights()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)


def glue_splits(task: str) -> dict[str, bool]:
    """The splits ``nyu-mll/glue`` has for ``task``, and whether each is labelled (test splits are not)."""
    if task == "mnli":
        return {"train": True, "validation_matched": True, "validation_mismatched": True,
                "test_matched": False, "test_mismatched": False}  # fmt: skip
    return {"train": True, "validation": True, "test": False}


def write_glue_task(folder: Path, task: str, n_train: int, n_eval: int, seed: int = 0) -> None:
    """``task`` in GLUE's own columns (its text fields, ``label``, ``idx``) and splits, as JSON lines;
    unlabelled test rows carry ``label = -1``, as on the Hub."""
    from aslora.harness.inputs.data import get_task

    spec, rng = get_task(task), np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, labelled in glue_splits(task).items():
        with open(folder / f"{split}.jsonl", "w") as f:
            for i in range(n_train if split == "train" else n_eval):
                row = {field: " ".join(rng.choice(WORDS, 6)) for field in spec.text_fields}
                if not labelled:
                    row["label"] = -1
                elif spec.is_regression:
                    row["label"] = float(rng.uniform(0, 5))
                else:
                    row["label"] = int(i % spec.num_labels)
                row["idx"] = i
                f.write(json.dumps(row) + "\n")


def train_size(overrides: Sequence[str]) -> int:
    """The fewest training examples with which the run ``overrides`` compose fits its recipe's merge
    schedule (after warm-up, every tie on its own step) — see :func:`_fewest_examples`."""
    from aslora.harness.runs.settings import RunSettings
    from hydra_glue import compose_run

    return _fewest_examples(RunSettings.from_dict(*compose_run(list(overrides))), " ".join(overrides))


def _fewest_examples(settings, what: str) -> int:
    """Whole batches, one an epoch if that fits — found by the run's own planner, so a schedule pinned
    in steps (the ASLoRA paper's MRPC row: T_s = 320, m = 240) gets the batches it needs, as it has on
    the real data."""
    batch = settings.train.batch_size
    for batches in range(1, 10_000):
        try:
            settings.plan(batches * batch, num_processes=1)
            return batches * batch
        except ValueError:
            continue
    raise ValueError(f"no training-set size up to 10,000 batches fits the schedule of {what}")


def write_alpaca(folder: Path, n_rows: int, seed: int = 0) -> None:
    """``train.jsonl`` in tatsu-lab/alpaca's columns (instruction, input — empty for about half, as
    on the Hub — output, text)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w") as f:
        for i in range(n_rows):
            instruction, output = " ".join(rng.choice(WORDS, 6)), " ".join(rng.choice(WORDS, 8))
            extra = " ".join(rng.choice(WORDS, 4)) if i % 2 else ""
            f.write(json.dumps({"instruction": instruction, "input": extra, "output": output, "text": ""}) + "\n")


def build(root: Path, grid: str) -> list[str]:
    """Write the shrunk model and the data ``grid`` reads under ``root``; return the overrides that
    point the grid at them (and keep everything it writes under ``root``)."""
    if grid == "glue":
        return _build_glue(root)
    if grid == "alpaca":
        return _build_alpaca(root)
    if grid in STAGED:
        return _shrink_offline(_staged_commands(grid), list(STAGED_SCALE.get(grid, ())))
    return _shrink_offline(GRIDS[grid], [f"experiments_dir={root / 'experiments'}"])


def _shrink_offline(commands: Sequence[Sequence[str]], scale: list[str]) -> list[str]:
    """The offline grids keep their models and data (real, shipped in PyPI packages): only the
    number of examples shrinks, to the fewest with which every job of ``commands`` fits its schedule."""
    from aslora.harness.runs.settings import RunSettings
    from hydra_glue import composer
    from scripts.grids.preflight import jobs_of

    scale = [*scale, "task.max_eval_examples=8"]
    needed = 1
    with composer() as compose:
        for command in commands:
            for job in jobs_of([*command, *scale]):
                settings = RunSettings.from_dict(*compose(job))
                needed = max(needed, _fewest_examples(settings, " ".join(job)))
    return [*scale, f"task.max_train_examples={needed}"]


# The small-data suite trains 30 epochs, each with a validation pass: at rehearsal scale that is
# ~70 minutes of 2 cores for its 52 runs. Its schedules are fractions of the run (T_s and m as the
# paper's MRPC fractions, the shipped ones too), so a 3-epoch run ties at the same fractions, on more
# examples (_fewest_examples finds how many); the per-epoch validation and best-epoch test still run.
STAGED_SCALE = {"smalldata": ("train.epochs=3",)}


def _staged_commands(grid: str) -> list[list[str]]:
    """Every multirun a staged grid can run, whatever its lr stage scores: the lr stage as planned,
    the final (and curve) stages as if every lr-stage adapter had chosen 1e-3 (the lr changes no
    schedule, so these are the schedules the real stages will train)."""
    from scripts.grids import protocol, smalldata

    if STAGED[grid][0] == "smalldata":  # the exploratory and the confirmatory grids alike
        return [
            *smalldata.lr_commands(),
            *(arm.commands(1e-3, 1) for arm in smalldata.ARMS),
            # the preregistered confirmatory study: its lr stages and its arms (test scored every epoch)
            *smalldata.arm_lr_commands(lrs=(1e-3,)),
            *(arm.commands(1e-3, 6, smalldata.CONFIRM_SWEEP) for arm in smalldata.ARMS),
        ]
    sweeps = protocol.SWEEPS[grid]
    chosen = [
        {"task": task, "adapter": adapter, "variant": variant, "lr": "1e-3"}
        for task in sweeps.tasks
        for adapter, variant in protocol.FINAL_ORDER
    ]
    commands = [*sweeps.lr_stage, *protocol.final_commands(chosen, grid)]
    if grid == "protocol":  # the size curves; their thresholds change no schedule either
        commands += protocol.curve_commands(chosen, [])
    return commands


def _sweep_values(sweep: str, key: str) -> list[str]:
    config = yaml.safe_load((CONFIG_DIR / "sweep" / f"{sweep}.yaml").read_text())
    return str(config["hydra"]["sweeper"]["params"][key]).split(",")


def _build_glue(root: Path) -> list[str]:
    from aslora.harness.inputs.data import TASKS

    build_roberta(root / "models" / "roberta-base")
    tasks = sorted(name for name, spec in TASKS.items() if spec.source == "glue")
    # one folder per task and adapter: only the ASLoRA MRPC recipe (its schedule pinned in steps)
    # needs more than one batch an epoch, and the other adapters need not train that long
    for task, adapter in itertools.product(tasks, _sweep_values("glue", "adapter")):
        n_train = train_size(["model=roberta-base", f"task={task}", f"adapter={adapter}"])
        write_glue_task(root / "glue" / task / adapter, task, n_train, n_eval=8)
    return _local_overrides(root, "roberta-base", f"{root / 'glue'}/${{task.name}}/${{adapter.name}}")


def _build_alpaca(root: Path) -> list[str]:
    build_llama(root / "models" / "llama-2-7b")
    for adapter in _sweep_values("alpaca", "adapter"):
        n_train = train_size(["sweep=alpaca", f"adapter={adapter}"])
        # the task keeps TRAIN_FRACTION of its rows to train
        write_alpaca(root / "alpaca" / adapter, math.ceil(n_train / TRAIN_FRACTION) + 2)
    return _local_overrides(root, "llama-2-7b", f"{root / 'alpaca'}/${{adapter.name}}")


def _local_overrides(root: Path, model: str, local_dir: str) -> list[str]:
    """Every job of a rehearsed grid: runs under ``root``, the shrunk model and the written data."""
    return [
        f"experiments_dir={root / 'experiments'}",
        "hub=false",
        "model.source=local",
        f"model.pretrained={root / 'models' / model}",
        f"task.local_dir={local_dir}",
    ]


def rehearse(grid: str, root: Path, seeds: str | None, extra: Sequence[str]) -> Path:
    """Build, run every multirun of ``grid`` at tiny scale, then collect, tables and figures under
    ``root/results``. Returns that folder."""
    from scripts.reports.collect_results import main as collect
    from scripts.reports.make_tables import main as tables
    from scripts.reports.plot_sharing import main as plot_sharing

    if grid in STAGED and seeds:  # refused before build() writes the tiny models and data
        raise SystemExit(f"--seeds is for the plain grids; staged grid {grid!r} runs its stages' own seeds")
    overrides = build(root, grid) + ([f"seed={seeds}"] if seeds else []) + list(extra)
    if grid in STAGED:
        run_staged(grid, root, overrides)  # the stages of the real grid's make target, in its order
    else:
        run_grid(grid, overrides)  # the same multiruns, in the same order, as the real grid's make target
    results = root / "results"
    runs = results / "runs.csv"
    if collect(["--experiments", str(root / "experiments"), "--out", str(runs), "--replace"]) != 0:
        raise SystemExit("collect failed")
    if tables(["--runs", str(runs), "--out", str(results / "tables")]) != 0:
        raise SystemExit("tables failed")
    _suite_report(grid, results)
    for run_dir in sorted((root / "experiments").glob("*_aslora_*")):
        plot_sharing(["--out", str(results / "figures" / run_dir.name), str(run_dir)])
    return results


def _suite_report(grid: str, results: Path) -> None:
    """A staged grid's own report, as its ``make`` target makes it: the protocol's table and figure,
    or the small-data suite's table and learning curves."""
    suite = STAGED[grid][0] if grid in STAGED else None  # a plain grid has no report of its own
    if suite == "smalldata":  # the exploratory and the confirmatory grids alike
        from scripts.reports.smalldata_report import main as report

        argv = ["--reports", str(results / "reports"), "--out", str(results / "smalldata")]
        argv += ["--figure", str(results / "figures" / "smalldata_curves.png")]
    elif suite in ("protocol", "protocol-instruct"):
        from scripts.reports.protocol_report import main as report

        argv = ["--runs", str(results / "runs.csv"), "--tables", str(results / "tables")]
        argv += ["--figures", str(results / "figures")]
    else:
        return
    if report(argv) != 0:
        raise SystemExit(f"the {grid} report failed")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("grid", choices=sorted([*GRIDS, *STAGED]))
    parser.add_argument("--root", type=Path, default=None, help="the scratch folder, emptied first (rehearsal/<grid>)")
    parser.add_argument("--seeds", default=None, help="e.g. 1: one seed of each job (default: the grid's seeds)")
    parser.add_argument("overrides", nargs="*", help="extra overrides for every multirun (e.g. a launcher)")
    args = parser.parse_intermixed_args(argv)
    root = args.root or ROOT / "rehearsal" / args.grid
    if root.exists():
        shutil.rmtree(root)
    results = rehearse(args.grid, root, args.seeds, args.overrides)
    print(f"rehearsal of {args.grid}: every job ran; runs.csv, tables and figures in {results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
