"""Batched generation scoring against a one-example-at-a-time ``generate`` loop.

A benchmark, not a timed assertion (the machines are shared and noisy). It runs only when
benchmarks are asked for::

    .venv/bin/python -m pytest tests/perf/test_generation_batching.py --benchmark-only -s

The same 32 NQ-open prompts (the model's own prompt format, greedy, 24 new tokens, stop at a
newline, F1 and exact match) are scored by ``peftcore.score.score`` with ``batch_size=32``
(pytest-benchmark times it) and with ``batch_size=1`` (a plain loop of single-prompt ``generate`` calls, timed
with the same clock for the same number of rounds). The medians, their ratio and the torch
thread count go to ``benchmark.extra_info`` and are printed. In fp32 the two must produce the
same text for every prompt; in bf16 the share of identical answers is reported (rounding in
bf16 depends on the batch shape, so a near-tie between two tokens can flip).
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import pytest

from peftcore.spec import BaseOptions, DataSizes, EvalSettings, SpecStore
from peftcore.train.prompting import PromptFormat

SPECS = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"
PROMPTS = 32
NEW_TOKENS = 24
ROUNDS = 3


# Module scope: skipped before the module's model fixtures load it (a function-scoped skip
# came after them, 37 s of loading for nothing in every make test).
@pytest.fixture(scope="module", autouse=True)
def _only_as_benchmark(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("benchmark_only"):
        pytest.skip("a benchmark of minutes: run with --benchmark-only")


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread (restored after): the machines this runs on share two cores between
    several jobs, and under that load two OpenMP threads ran this model 4-6x slower than one
    (spin-waiting on busy cores), which made the figures noise. Both modes use the same count."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def setup():
    from peftcore.data.tasks import load_task
    from peftcore.models.load import load_base

    store = SpecStore(SPECS)
    model_spec = store.get("models", "smollm2-135m")
    base = load_base(model_spec, BaseOptions(), "cpu")
    task = store.get("tasks", "nq_open")
    generation = dataclasses.replace(task.generation, max_new_tokens=NEW_TOKENS)
    # Cheap metrics only: the embedding-based ones (cosine, BERTScore) cost the same in both
    # modes and would blur what batching changes.
    task = dataclasses.replace(task, generation=generation, metrics=("f1", "exact_match"))
    examples = load_task(task, DataSizes(train=1, held_out=PROMPTS, seen=1)).held_out
    fmt = PromptFormat.for_model(base.tokenizer, model_spec.chat_template)
    return base, fmt, task, examples


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batched_generation_vs_per_example_loop(benchmark, setup, precision: str) -> None:
    import torch

    from peftcore import score as scoring

    base, fmt, task, examples = setup

    def run(batch_size: int) -> scoring.ScoreResult:
        settings = EvalSettings(batch_size=batch_size)
        return scoring.score(base.model, fmt, examples, task, settings, device="cpu", precision=precision)

    run(PROMPTS)  # warm-up: first-call allocations, stop-string tables
    batched = benchmark.pedantic(lambda: run(PROMPTS), rounds=ROUNDS, iterations=1)
    loop_seconds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        one_by_one = run(1)
        loop_seconds.append(time.perf_counter() - start)

    batched_median = benchmark.stats.stats.median
    loop_median = statistics.median(loop_seconds)
    speedup = loop_median / batched_median
    texts = [p["generated"] for p in batched.predictions]
    solo_texts = [p["generated"] for p in one_by_one.predictions]
    same = sum(a == b for a, b in zip(texts, solo_texts, strict=True)) / len(texts)
    benchmark.extra_info.update(
        prompts=PROMPTS,
        max_new_tokens=NEW_TOKENS,
        precision=precision,
        torch_threads=torch.get_num_threads(),
        batched_median_seconds=round(batched_median, 3),
        per_example_median_seconds=round(loop_median, 3),
        per_example_rounds_seconds=[round(s, 3) for s in loop_seconds],
        speedup=round(speedup, 2),
        identical_answers=same,
        batched_metrics=batched.metrics,
    )
    print(
        f"\n[{precision}] {PROMPTS} prompts x {NEW_TOKENS} new tokens, {torch.get_num_threads()} threads: "
        f"batched median {batched_median:.2f} s, one-by-one median {loop_median:.2f} s, "
        f"speed-up {speedup:.1f}x, identical answers {same:.0%}"
    )
    if precision == "fp32":
        assert texts == solo_texts
