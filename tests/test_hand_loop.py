"""The throughput benchmark's hand-written loop (tests/perf/hand_loop.py) computes the loss it
claims: its first step's loss is transformers' own full-LM-head loss of the same batch, with the
adapters active, and a few steps on that batch lower it. On the tiny random Llama (tests/tiny_llama.py).
"""

from __future__ import annotations

import doctest
from pathlib import Path

import pytest
import torch
from perf import hand_loop
from tiny_llama import tiny_base

from peftcore.spec import SpecStore, TrainingBudget

SPECS = SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")
STEPS = 3


@pytest.fixture(scope="module")
def tiny():
    return tiny_base(SPECS.get("models", "smollm2-135m"))


def _rows(tokenizer) -> list[dict[str, list[int]]]:
    """Three examples of different lengths, the answer (labels) at the end of each."""
    rows = []
    for prompt, answer in (("a b c d e f", " g h"), ("one two", " three"), ("x y z", " w v u t")):
        context = tokenizer(prompt)["input_ids"]
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": context + target, "labels": [-100] * len(context) + target})
    return rows


def _lora(tiny):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    # Random B (not peft's zeros): the adapters change the loss from the first step, so a loop that
    # ran the backbone without them would be caught. No dropout: the first loss is deterministic.
    config = LoraConfig(
        task_type="CAUSAL_LM",
        r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        target_modules="all-linear",
        init_lora_weights=False,
    )
    return get_peft_model(tiny.fresh(), config).train()


def _full_head_loss(model, tokenizer, rows) -> torch.Tensor:
    """transformers' own loss: the library collator's padding and mask, the LM head everywhere."""
    from transformers import DataCollatorForSeq2Seq

    tokenizer.padding_side = "right"
    batch = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)(rows)
    with torch.no_grad():
        return model(**batch).loss


@pytest.mark.parametrize(("precision", "rtol"), [("fp32", 1e-6), ("bf16", 2e-2)])
def test_first_step_loss_is_the_full_heads_and_steps_lower_it(tiny, precision: str, rtol: float) -> None:
    rows = _rows(tiny.tokenizer)
    model = _lora(tiny)
    full_head = _full_head_loss(model, tiny.tokenizer, rows)
    with model.disable_adapter():
        assert abs(float(_full_head_loss(model, tiny.tokenizer, rows)) - float(full_head)) > 1e-3

    budget = TrainingBudget(
        max_steps=STEPS, batch_size=len(rows), learning_rate=1e-2, lr_scheduler="constant"
    )
    run = hand_loop.train(model, rows, budget, precision=precision, device="cpu")

    torch.testing.assert_close(torch.tensor(run.curve[0]), full_head, rtol=rtol, atol=1e-5)
    assert len(run.curve) == STEPS
    assert run.curve[-1] < run.curve[0] - 0.1, run.curve
    assert run.tokens == STEPS * sum(len(row["input_ids"]) for row in rows)  # padding not counted


def test_batches_are_grouped_by_length_and_padded_to_their_own_longest_row() -> None:
    examples = doctest.testmod(hand_loop)
    assert examples.attempted > 0 and examples.failed == 0
    input_ids, labels = hand_loop.pad(
        [{"input_ids": [5, 6], "labels": [-100, 6]}, {"input_ids": [7], "labels": [7]}]
    )
    assert input_ids.tolist() == [[5, 6], [7, 0]]
    assert labels.tolist() == [[-100, 6], [7, -100]]


def test_prompt_learning_is_refused(tiny) -> None:
    from peft import PromptTuningConfig, get_peft_model

    model = get_peft_model(tiny.fresh(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    with pytest.raises(ValueError, match="virtual tokens"):
        hand_loop.decoder_and_head(model)
