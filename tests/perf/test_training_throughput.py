"""Training throughput side by side: TRL's SFTTrainer, peftcore and a hand-written loop, one
process, same work.

A benchmark, not a timed assertion (the machines are shared and noisy). It runs only when
benchmarks are asked for::

    make perf                     # every benchmark of tests/perf
    .venv/bin/python -m pytest tests/perf/test_training_throughput.py --benchmark-only -s

The same model (the default SmolLM2-135M), the same token ids and labels (the SQuAD task's
training examples, tokenized once by peftcore with answer-only labels at max length 256), the
same peft config (the method's spec), batch 4, the same number of steps, bf16 autocast where
the device has it. Six stacks train one after the other, in an order that rotates every round
so a drift of the machine's speed hits all of them:

- ``trl``: TRL's ``SFTTrainer`` with its defaults (gradient checkpointing on, fused AdamW, its
  chunked LM head), only the budget set;
- ``trl-no-gc``: the same with gradient checkpointing off;
- ``peftcore``: ``peftcore.train.trainer.train`` with the spec defaults;
- ``peftcore-levers-off``: the same with ``lm_head: all`` and ``fast_dropout: false``, as
  peftcore trained before the levers;
- ``hand-fp32``, ``hand-bf16``: the ceiling, a careful practitioner's plain torch loop
  (tests/perf/hand_loop.py: length-grouped batches, the LM head on labeled positions only,
  AdamW) on the same peft model, in fp32 and under bf16 autocast.

Each round uses seed ``round``. Printed and kept in ``benchmark.extra_info``: each stack's
median real (non-padding) tokens/s, the ratios (peftcore over TRL, and over the faster of the
two hand-loop stacks, which is named), peftcore's MFU, and how far the levers move the
loss curve (mean absolute difference, same seed) against how far another seed moves it.
Environment: ``PEFTCORE_PERF_METHODS`` (lora,qlora,dora), ``PEFTCORE_PERF_STEPS`` (20),
``PEFTCORE_PERF_ROUNDS`` (2), ``PEFTCORE_PERF_STACKS`` (every stack; a ratio is printed only
when both of its stacks ran). On a CPU without bf16 instructions TRL's defaults train in
emulated bf16, minutes a step: ``PEFTCORE_PERF_STACKS=peftcore,hand-fp32,hand-bf16`` measures
the ceiling there.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from peftcore.spec import DataSizes, SpecStore, TrainingBudget

SPECS = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"
METHODS = os.environ.get("PEFTCORE_PERF_METHODS", "lora,qlora,dora").split(",")
STEPS = int(os.environ.get("PEFTCORE_PERF_STEPS", "20"))
ROUNDS = int(os.environ.get("PEFTCORE_PERF_ROUNDS", "2"))
ALL_STACKS = ("trl", "trl-no-gc", "peftcore", "peftcore-levers-off", "hand-fp32", "hand-bf16")
STACKS = tuple(os.environ.get("PEFTCORE_PERF_STACKS", ",".join(ALL_STACKS)).split(","))
HAND_STACKS = tuple(s for s in ("hand-fp32", "hand-bf16") if s in STACKS)


# Module scope: skipped before the module's model fixtures load it (a function-scoped skip
# came after them, 37 s of loading for nothing in every make test).
@pytest.fixture(scope="module", autouse=True)
def _only_as_benchmark(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("benchmark_only"):
        pytest.skip("a benchmark of many minutes: run with --benchmark-only")


@pytest.fixture(scope="module")
def store() -> SpecStore:
    return SpecStore(SPECS)


@pytest.fixture(scope="module")
def squad(store):
    """SQuAD's training examples as peftcore tokenizes them (both stacks get these ids)."""
    from peftcore.data.tasks import load_task

    task = store.get("tasks", "squad")
    return load_task(task, DataSizes(train=200, held_out=1, seen=1))


def _budget(seed: int, **levers: Any) -> TrainingBudget:
    return TrainingBudget(
        max_steps=STEPS, batch_size=4, max_length=256, learning_rate=2e-4, seed=seed, **levers
    )


def _sft_config(cls: Any, budget: TrainingBudget, *, checkpointing: bool, device: str) -> Any:
    """TRL's defaults with only the budget set."""
    return cls(
        output_dir=tempfile.mkdtemp(prefix="peftcore-perf-trl-"),
        max_steps=budget.max_steps,
        per_device_train_batch_size=budget.batch_size,
        learning_rate=budget.learning_rate,
        max_length=budget.max_length,
        gradient_checkpointing=checkpointing,
        bf16=True,
        use_cpu=device == "cpu",
        seed=budget.seed,
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )


def _train_trl(base, dataset, peft_config, budget: TrainingBudget, *, checkpointing: bool, device: str):
    from transformers import set_seed
    from trl import SFTConfig, SFTTrainer

    set_seed(budget.seed)
    with warnings.catch_warnings():
        # TRL 1.16's own default sets the deprecated `gradient_checkpointing` alias.
        warnings.filterwarnings("ignore", "`gradient_checkpointing` is deprecated", FutureWarning)
        args = _sft_config(SFTConfig, budget, checkpointing=checkpointing, device=device)
    trainer = SFTTrainer(
        model=base.fresh(),
        args=args,
        train_dataset=dataset.remove_columns(["length"]),
        processing_class=base.tokenizer,
        peft_config=peft_config,
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    curve = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {"seconds": seconds, "tokens": int(trainer.state.num_input_tokens_seen), "curve": curve}


def _train_peftcore(base, dataset, method, budget: TrainingBudget, *, device: str):
    from transformers import set_seed

    import peftcore.train.trainer as train
    from peftcore.device import resolve_precision
    from peftcore.train import methods
    from peftcore.train.flops import training_peaks

    # train() takes the peak of each precision the device could train in (MFU is against the best).
    peaks = training_peaks(device, resolve_precision(budget.precision, device))
    set_seed(budget.seed)
    model = methods.apply_method(base.fresh(), method, budget)
    outcome = train.train(
        model,
        base.tokenizer,
        dataset,
        budget,
        method,
        device=device,
        output_dir=Path(tempfile.mkdtemp(prefix="peftcore-perf-")),
        peak_flops=peaks,
    )
    return {
        "seconds": outcome.train_seconds,
        "tokens": outcome.train_tokens,
        "curve": [loss for _, loss in outcome.loss_curve],
        "mfu": outcome.extra.get("mfu"),
    }


def _train_hand(base, rows, peft_config, budget: TrainingBudget, *, precision: str, device: str):
    """The hand-written loop on the model with the peft config, applied as TRL applies it."""
    import hand_loop
    from peft import get_peft_model
    from transformers import set_seed

    set_seed(budget.seed)
    model = get_peft_model(base.fresh(), peft_config)
    run = hand_loop.train(model, rows, budget, precision=precision, device=device)
    return {"seconds": run.seconds, "tokens": run.tokens, "curve": run.curve}


def _curve_gap(a: dict[str, Any], b: dict[str, Any]) -> float:
    """The mean absolute difference of two runs' loss curves, step by step."""
    return statistics.fmean(abs(x - y) for x, y in zip(a["curve"], b["curve"], strict=True))


@pytest.mark.parametrize("method_name", METHODS)
def test_training_throughput_against_trl(benchmark, store, squad, method_name: str) -> None:
    unknown = sorted(set(STACKS) - set(ALL_STACKS))
    assert not unknown, f"PEFTCORE_PERF_STACKS: unknown {unknown}; expected some of {', '.join(ALL_STACKS)}"
    if any(s.startswith("trl") for s in STACKS):
        pytest.importorskip("trl", reason="TRL is the comparison: pip install -e '.[perf]'")
    from peftcore.device import default_device
    from peftcore.models.load import load_base
    from peftcore.train import methods, prompting

    device = default_device()
    model_spec = store.get("models", "smollm2-135m")
    method = store.get("methods", method_name)
    base = load_base(model_spec, method.base, device)
    fmt = prompting.PromptFormat.for_model(base.tokenizer, model_spec.chat_template)
    dataset = prompting.tokenized_train_set(
        squad.train, fmt, 256, lm=False, data_key=f"{squad.data_sha256}:{squad.split_sha256}"
    )
    rows = dataset.select_columns(["input_ids", "labels"]).to_list()  # the hand loop's rows
    runs: dict[str, list[dict[str, Any]]] = {stack: [] for stack in STACKS}

    def one_round() -> None:
        seed = len(runs[STACKS[0]])
        budget = _budget(seed)
        peft_config = methods.build_peft_config(method, budget)
        order = STACKS[seed % len(STACKS) :] + STACKS[: seed % len(STACKS)]
        for stack in order:
            if stack.startswith("trl"):
                run = _train_trl(
                    base, dataset, peft_config, budget, checkpointing=stack == "trl", device=device
                )
            elif stack in HAND_STACKS:
                precision = stack.removeprefix("hand-")
                run = _train_hand(base, rows, peft_config, budget, precision=precision, device=device)
            else:
                levers = {"lm_head": "all", "fast_dropout": False} if stack.endswith("off") else {}
                stack_budget = dataclasses.replace(budget, **levers)
                run = _train_peftcore(base, dataset, method, stack_budget, device=device)
            runs[stack].append(run)

    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1)
    rate = {s: statistics.median(r["tokens"] / r["seconds"] for r in runs[s]) for s in STACKS}
    fastest_hand = max(HAND_STACKS, key=rate.__getitem__) if HAND_STACKS else None
    rate["hand"] = rate[fastest_hand] if fastest_hand else 0.0

    def ratio(name: str, a: str, b: str) -> dict[str, float]:
        return {name: round(rate[a] / rate[b], 2)} if rate.get(a) and rate.get(b) else {}

    on, off = runs.get("peftcore", []), runs.get("peftcore-levers-off", [])
    mfu = [r["mfu"] for r in on if r["mfu"] is not None]
    figures: dict[str, Any] = {
        "method": method_name,
        "steps": STEPS,
        "rounds": ROUNDS,
        **{f"{s}_tokens_per_second": round(rate[s], 1) for s in STACKS},
        **ratio("peftcore_over_trl", "peftcore", "trl"),
        **ratio("peftcore_over_trl_no_gc", "peftcore", "trl-no-gc"),
        **ratio("levers_on_over_off", "peftcore", "peftcore-levers-off"),
        "fastest_hand": fastest_hand,
        **ratio("peftcore_over_hand", "peftcore", "hand"),
        "peftcore_mfu": round(statistics.median(mfu), 4) if mfu else None,
        # How far the levers move the loss curve (same seed), and how far a new seed does.
        "levers_loss_difference": (
            round(statistics.fmean(map(_curve_gap, on, off)), 4) if on and off else None
        ),
        "seed_loss_difference": round(_curve_gap(off[0], off[1]), 4) if len(off) > 1 else None,
    }
    benchmark.extra_info.update(figures)
    print(f"\n[{method_name}] " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    for stack in STACKS:
        assert all(r["tokens"] > 0 and r["curve"] for r in runs[stack]), f"{stack} trained nothing"
