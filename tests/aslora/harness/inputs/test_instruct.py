"""Instruction tuning: prompt masking, the held-out loss, the offline dialogue data, and a real
SmolLM2-135M-Instruct run end to end (the model is dequantised once per machine and cached)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from aslora.harness.inputs import instruct
from aslora.harness.inputs.data import TASKS
from aslora.harness.measuring.metrics import is_better
from aslora.harness.training.scoring import evaluate_causal_lm
from tests.conftest import VOCAB, tiny_llama_lm


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from aslora.harness.inputs.models import dequantised_smollm2

    return AutoTokenizer.from_pretrained(dequantised_smollm2())


@pytest.fixture(params=["chat_template", "alpaca"])
def formatted_tokenizer(request, tokenizer):
    if request.param == "chat_template":
        return tokenizer
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None  # as LLaMA-2-7B base: no template → Alpaca's prompt
    return plain


def test_prompt_tokens_are_masked_and_the_response_is_the_target(formatted_tokenizer):
    tok = formatted_tokenizer
    example = instruct.encode(tok, "Who was the first woman to win a Nobel Prize?", "Marie Curie.", max_length=256)
    head, tail = instruct.split_prompt(tok, "Who was the first woman to win a Nobel Prize?", "Marie Curie.")
    n_prompt = len(tok(head, add_special_tokens=False)["input_ids"])
    labels = example["labels"]
    assert labels[:n_prompt] == [instruct.IGNORE_INDEX] * n_prompt
    assert instruct.IGNORE_INDEX not in labels[n_prompt:]
    assert labels[n_prompt:] == example["input_ids"][n_prompt:]
    assert tok.decode(labels[n_prompt:]) == tail and tail.startswith("Marie Curie.")
    assert tail.endswith(tok.eos_token) or tail.rstrip().endswith(tok.eos_token)  # learns to stop
    assert example["attention_mask"] == [1] * len(example["input_ids"])
    if instruct.prompt_format(tok) == "alpaca":
        assert "### Instruction:\nWho was" in head and head.endswith("### Response:\n")


def test_truncation_keeps_the_prompt_and_drops_examples_with_no_room_for_a_reply(tokenizer):
    prompt, reply = "Tell me about the weather.", "It is sunny today, with a light breeze from the west. " * 20
    n_prompt = len(tokenizer(instruct.split_prompt(tokenizer, prompt, reply)[0], add_special_tokens=False)["input_ids"])
    cut = instruct.encode(tokenizer, prompt, reply, max_length=n_prompt + 5)
    assert len(cut["input_ids"]) == n_prompt + 5 and sum(label != instruct.IGNORE_INDEX for label in cut["labels"]) == 5
    assert instruct.encode(tokenizer, prompt, reply, max_length=n_prompt) is None


def test_offline_dialogue_pairs_and_their_published_split_sizes():
    chatterbot, chitchat = instruct.load_chatterbot(), instruct.load_chitchat()
    for frame in (chatterbot, chitchat):
        assert list(frame.columns) == ["prompt", "response"]
        assert (frame.prompt.str.len() > 0).all() and (frame.response.str.len() > 0).all()
    assert not chatterbot.duplicated().any()
    assert ("Who was the first woman to win a Nobel Prize (1903)?", "Marie Curie") in set(map(tuple, chatterbot.values))
    # the plan check uses train_size before loading anything: it must be the real 80 % split
    assert TASKS["instruct"].train_size == int(0.8 * len(chatterbot))
    assert TASKS["instruct_chitchat"].train_size == int(0.8 * len(chitchat))


def _lm_examples():
    torch.manual_seed(1)
    examples = []
    for length, n_prompt in ((7, 3), (12, 8), (5, 1), (9, 4)):
        ids = torch.randint(1, VOCAB, (length,)).tolist()
        examples.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * length,
                "labels": [instruct.IGNORE_INDEX] * n_prompt + ids[n_prompt:],
            }
        )
    return examples


@pytest.mark.parametrize("batch_size", [1, 3])
def test_held_out_loss_is_the_token_weighted_mean_whatever_the_batching(batch_size):
    from accelerate import Accelerator
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import DataCollatorForSeq2Seq, PreTrainedTokenizerFast

    model, examples = tiny_llama_lm(), _lm_examples()
    # reference: every response token's -log p, summed, over the count — one example at a time
    nll, count = 0.0, 0
    for ex in examples:
        ids, labels = torch.tensor([ex["input_ids"]]), torch.tensor([ex["labels"]])
        n = int((labels[0, 1:] != instruct.IGNORE_INDEX).sum())
        with torch.no_grad():
            nll += float(model(input_ids=ids, labels=labels).loss) * n  # HF: mean over this example's tokens
        count += n
    # the collator only needs a pad id; the examples are token ids already
    pad = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(WordLevel({"<pad>": 0}, unk_token="<pad>")), pad_token="<pad>"
    )
    collate = DataCollatorForSeq2Seq(pad, label_pad_token_id=instruct.IGNORE_INDEX)
    loader = torch.utils.data.DataLoader(examples, batch_size=batch_size, collate_fn=collate)
    metrics = evaluate_causal_lm(model, loader, Accelerator(cpu=True))
    assert metrics["loss"] == pytest.approx(nll / count, rel=1e-5)
    assert metrics["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)


def test_lower_is_better_for_loss_and_perplexity_only():
    assert is_better("loss", 1.0, 2.0) and not is_better("loss", 2.0, 1.0)
    assert is_better("perplexity", 3.0, 4.0)
    assert is_better("accuracy", 0.9, 0.8) and not is_better("accuracy", 0.8, 0.9)
    assert is_better("loss", 5.0, None)


@pytest.mark.slow  # ~32 s on 2 cores: the fast suite ran 9:30 of its 10 minutes; CI runs it with the slow tests
def test_smollm2_instruction_run_end_to_end(tmp_path):
    from aslora.harness.runs.report import read_report
    from aslora.harness.runs.run import run
    from hydra_glue import compose_run

    container, choices = compose_run(
        [
            "task=instruct",
            "adapter=aslora",
            "debug=smoke",
            f"experiments_dir={tmp_path}",
            "task.max_train_examples=32",
            "task.max_eval_examples=6",
            "train.batch_size=4",
            "adapter.params.max_merges=2",
            "adapter.params.merge_interval_fraction=0.3",
        ]
    )
    assert container["model"]["name"] == "smollm2-135m"  # the instruct task picks a decoder by default
    best = run(container, choices)
    report = read_report(tmp_path / container["run_name"] / "report.json")
    assert report["main_metric"] == "loss" and report["best"]["metric"] == best and math.isfinite(best)
    for split in ("validation", "test"):
        scores = report["best"][split]
        assert scores["perplexity"] == pytest.approx(math.exp(scores["loss"]))
    assert report["steps"] == 8 and report["prompt_format"] == "chat_template"
    # one global A (8×576) serves q (576→576) and v (576→192); 30 B's per type, two ties per type
    r, layers = 8, 30
    before, after = report["params"]["before"], report["params"]["after"]
    assert before["adapter"] == r * 576 + layers * r * (576 + 192) and before["num_distinct_B"] == 60
    assert after["adapter"] == r * 576 + (layers - 2) * r * (576 + 192) and after["num_distinct_B"] == 56
    assert report["params"]["lora_reference"] == layers * r * ((576 + 576) + (576 + 192))
    assert len(report["samples"]) == 3
    assert all(s["prompt"] and s["reference"] and isinstance(s["generated"], str) for s in report["samples"])
    assert any(s["generated"] for s in report["samples"])
    # evaluate.py on the saved adapter: the run's final held-out loss again, and generations from given prompts
    from aslora.harness.measuring.evaluation import evaluate_saved

    evaluated = evaluate_saved(run=str(tmp_path / container["run_name"]), prompts=["What is your name?"])
    final = report["epochs"][-1]
    assert evaluated["validation"]["loss"] == pytest.approx(final["val"]["loss"], rel=1e-6)
    assert evaluated["generations"][0]["prompt"] == "What is your name?"
    assert isinstance(evaluated["generations"][0]["generated"], str)
