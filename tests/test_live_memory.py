"""The live-tensor peak by kind (torch's MemTracker), on a tiny Llama with the real tokenizer.

Small on purpose: MemTracker slows the steps it watches by 5-27x, so the real model's figures
are a perf test (tests/perf/test_planner_vs_measured.py); here, that the figures are there,
add up, rank methods as their parts say, and that the tracker is left even when training fails.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from tiny_llama import tiny_config

from peftcore.errors import DivergenceError
from peftcore.spec import SpecStore

SPECS = SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")


@pytest.fixture(scope="module")
def tiny():
    from transformers import AutoModelForCausalLM

    from peftcore.models.load import load_tokenizer

    tokenizer = load_tokenizer(SPECS.get("models", "smollm2-135m"))
    config = tiny_config(tokenizer)
    torch.manual_seed(0)
    return tokenizer, lambda: AutoModelForCausalLM.from_config(config)


def _dataset(tokenizer):
    import datasets

    rows = [tokenizer(f"Question {i}: what is {i} plus {i}? Answer: {2 * i}")["input_ids"] for i in range(16)]
    return datasets.Dataset.from_dict({"input_ids": rows, "labels": rows, "length": [len(r) for r in rows]})


def _train(tiny, method_name: str, tmp_path: Path, **budget):
    import peftcore.train.trainer as train
    from peftcore.train import methods

    tokenizer, make = tiny
    method = SPECS.get("methods", method_name)
    defaults = {"max_steps": 3, "batch_size": 4, "precision": "fp32", "live_memory_steps": 2}
    budget = dataclasses.replace(_budget(), **{**defaults, **budget})
    model = methods.apply_method(make(), method, budget)
    return train.train(
        model, tokenizer, _dataset(tokenizer), budget, method, device="cpu", output_dir=tmp_path
    )


def _budget():
    from peftcore.spec import TrainingBudget

    return TrainingBudget()


def test_the_live_peak_is_recorded_by_kind_and_adds_up(tiny, tmp_path: Path) -> None:
    outcome = _train(tiny, "full", tmp_path)
    parts = outcome.extra["live_peak_by_kind"]
    assert outcome.extra["live_peak_bytes"] == sum(parts.values()) > 0
    assert outcome.extra["live_tracked_steps"] == 2
    weights = sum(p.numel() * p.element_size() for p in _weights(tiny))
    assert parts["parameters"] == pytest.approx(weights, rel=0.01)  # the model's own weights
    assert parts["optimizer_states"] == pytest.approx(2 * weights, rel=0.01)  # AdamW: two moments
    assert outcome.steps == 3  # the untracked step ran too


def _weights(tiny):
    _, make = tiny
    return list(make().parameters())


def test_an_adapter_allocates_less_than_full_fine_tuning(tiny, tmp_path: Path) -> None:
    full = _train(tiny, "full", tmp_path / "full").extra["live_peak_by_kind"]
    lora = _train(tiny, "lora", tmp_path / "lora").extra["live_peak_by_kind"]
    assert lora["optimizer_states"] < full["optimizer_states"] / 10
    assert sum(lora.values()) < sum(full.values())


def test_off_by_default_and_left_when_training_fails(tiny, tmp_path: Path) -> None:
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    assert "live_peak_bytes" not in _train(tiny, "lora", tmp_path / "off", live_memory_steps=0).extra
    with pytest.raises(DivergenceError):
        _train(tiny, "lora", tmp_path / "nan", learning_rate=float("inf"))
    assert _get_current_dispatch_mode_stack() == []  # no tracker left watching the process
