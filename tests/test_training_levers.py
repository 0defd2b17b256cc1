"""The training speed levers change speed, not what is computed (docs/training-speed.md).

- ``training.lm_head: labeled``: the LM head only where a label is set gives the same loss and
  the same gradients as the full head, and the same loss curve on the real model;
- ``training.fast_dropout``: the CPU dropout draws a Bernoulli(1 - p) mask and scales by
  1 / (1 - p), like ``nn.Dropout``, and is swapped in only for training;
- MFU: the FLOP count of the run and its fraction of the measured peak.
"""

from __future__ import annotations

import doctest
import math

import pytest
import test_train
import torch
from test_train import SPECS, base_loader, make_case, run_training
from tiny_llama import tiny_base

import peftcore.train.trainer as train
from peftcore.train import fast_dropout, flops

REAL = SPECS.get("models", "smollm2-135m")
fixed_batch = test_train.fixed_batch


@pytest.fixture(scope="module")
def bases():
    """The real model's loaded variants, one load for the module (the loss curve and FLOP count
    of SmolLM2 are what these tests check)."""
    return base_loader(REAL)


@pytest.fixture(scope="module")
def tiny():
    return tiny_base(SPECS.get("models", "smollm2-135m"))


def _batch(tokenizer, *, labeled_only: bool):
    """Three rows of different lengths, the answer (labels) at the end of each, right-padded."""
    rows = []
    for prompt, answer in (("a b c d e f", " g h"), ("one two", " three"), ("x y z", " w v u t")):
        context = tokenizer(prompt)["input_ids"]
        target = tokenizer(answer, add_special_tokens=False)["input_ids"]
        rows.append({"input_ids": context + target, "labels": [-100] * len(context) + target})
    tokenizer.padding_side = "right"
    return train._CountingCollator(tokenizer, labeled_only=labeled_only)(rows)


def test_labeled_lm_head_gives_the_full_heads_loss_and_gradients(tiny):
    model = tiny.fresh().train()
    results = {}
    for labeled_only in (False, True):
        batch = _batch(tiny.tokenizer, labeled_only=labeled_only)
        model.zero_grad()
        out = model(**batch)
        out.loss.backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        results[labeled_only] = (out.loss.detach(), out.logits.shape, grads)
    (full_loss, full_shape, full_grads), (loss, shape, grads) = results[False], results[True]
    torch.testing.assert_close(loss, full_loss, rtol=1e-6, atol=1e-6)
    for got, want in zip(grads, full_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    assert shape[1] < full_shape[1]  # fewer positions went through the head


def test_prompt_learning_keeps_the_full_head_and_says_why(tiny):
    from peft import PromptTuningConfig, get_peft_model

    assert train.lm_head_on_labeled_positions(tiny.fresh()) is None  # full fine-tuning: labeled
    model = get_peft_model(tiny.fresh(), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert "virtual tokens" in (train.lm_head_on_labeled_positions(model) or "")


@pytest.mark.slow
def test_labeled_lm_head_trains_the_same_loss_curve_on_the_real_model(bases, fixed_batch, tmp_path):
    curves, outcomes = {}, {}
    for head in ("all", "labeled"):
        case = make_case("lora", REAL, precision="fp32", lm_head=head, fast_dropout=False)
        _, outcome, _ = run_training(case, bases(case.method.base), fixed_batch, tmp_path / head)
        curves[head] = torch.tensor([loss for _, loss in outcome.loss_curve])
        outcomes[head] = outcome
    torch.testing.assert_close(curves["labeled"], curves["all"], rtol=1e-4, atol=1e-5)
    assert outcomes["labeled"].extra["lm_head"] == "labeled"
    assert outcomes["all"].extra["lm_head"] == "all"
    assert outcomes["labeled"].lm_head_positions < outcomes["all"].lm_head_positions / 2
    assert outcomes["labeled"].labeled_tokens == outcomes["all"].labeled_tokens > 0


# ---------------------------------------------------------------- fast dropout


def test_fast_dropout_draws_a_bernoulli_mask_and_scales_like_nn_dropout():
    torch.manual_seed(0)
    p, n = 0.05, 1_000_000
    layer = fast_dropout.FastDropout(p).train()
    x = torch.ones(n, requires_grad=True)
    y = layer(x)
    dropped = int((y == 0).sum())
    # Binomial(n, p): mean 50,000, standard deviation 218; six of them either side.
    assert abs(dropped - n * p) < 6 * math.sqrt(n * p * (1 - p))
    torch.testing.assert_close(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach())  # the gradient is the same scaled mask
    assert torch.equal(layer.eval()(x), x)  # identity when not training
    assert not torch.equal(layer.train()(x), y)  # a fresh mask every call


def test_fast_dropout_replaces_dropout_for_training_only_and_only_on_a_cpu():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.1), torch.nn.Dropout(0.0))
    original = model[1]
    with fast_dropout.installed(model, "cpu") as swapped:
        assert swapped == 1  # p = 0 stays: it costs nothing
        assert isinstance(model[1], fast_dropout.FastDropout) and model[1].p == 0.1
        assert type(model[2]) is torch.nn.Dropout
    assert model[1] is original
    with fast_dropout.installed(model, "cuda:0") as swapped:
        assert swapped == 0 and model[1] is original
    with fast_dropout.installed(model, "cpu", enabled=False) as swapped:  # training.fast_dropout: false
        assert swapped == 0 and model[1] is original


# ---------------------------------------------------------------- MFU


def test_flop_count_examples():
    assert doctest.testmod(flops).failed == 0


@pytest.mark.slow
def test_every_training_run_reports_mfu_against_the_measured_peak(bases, fixed_batch, tmp_path):
    case = make_case("lora", REAL, precision="fp32")
    peaks = flops.training_peaks("cpu", "fp32")
    _, outcome, _ = run_training(case, bases(case.method.base), fixed_batch, tmp_path, peak_flops=peaks)
    extra = outcome.extra
    # LoRA on SmolLM2: about 4 x 106M decoder FLOPs a token, plus the head on labeled tokens.
    assert extra["model_flops"] > 4 * 106e6 * outcome.train_tokens
    assert extra["peak_flops_per_second"] == round(max(peaks.values()))
    assert extra["precision_peak_flops_per_second"] == round(peaks["fp32"])
    assert 0 < extra["mfu"] < 1.0
