"""What exact scoring costs: choice scoring in fp32 (the default) against bf16 autocast.

A benchmark, not a timed assertion (the machines are shared and noisy). It runs only when
benchmarks are asked for::

    .venv/bin/python -m pytest tests/perf/test_scoring_precision.py --benchmark-only -s

The same held-out examples of ARC-Easy and SST-2 are scored by ``peftcore.score.score`` on the
default model, alternately in fp32 and in bf16 (pytest-benchmark times fp32; bf16 is timed with
the same clock for the same number of rounds, interleaved, so a drift of the machine's speed
hits both). Printed and kept in ``benchmark.extra_info``: the medians and their ratio, and how
many predictions were exact ties in each precision, and how many predictions the two disagree
on.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest

from peftcore.spec import BaseOptions, DataSizes, EvalSettings, SpecStore
from peftcore.train.prompting import PromptFormat

SPECS = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"
EXAMPLES = {"arc_easy": 100, "sst2": 100}
ROUNDS = 3


# Module scope: skipped before the module's model fixtures load it (a function-scoped skip
# came after them, 37 s of loading for nothing in every make test).
@pytest.fixture(scope="module", autouse=True)
def _only_as_benchmark(request: pytest.FixtureRequest) -> None:
    if not request.config.getoption("benchmark_only"):
        pytest.skip("a benchmark of minutes: run with --benchmark-only")


@pytest.fixture(scope="module")
def base():
    from peftcore.models.load import load_base

    store = SpecStore(SPECS)
    spec = store.get("models", "smollm2-135m")
    loaded = load_base(spec, BaseOptions(), "cpu")
    return store, spec, loaded


@pytest.mark.parametrize("task_name", sorted(EXAMPLES))
def test_fp32_scoring_against_bf16(benchmark, base, task_name: str) -> None:
    from peftcore import score as scoring
    from peftcore.data.tasks import load_task

    store, spec, loaded = base
    task = store.get("tasks", task_name)
    examples = load_task(task, DataSizes(train=1, held_out=EXAMPLES[task_name], seen=1)).held_out
    fmt = PromptFormat.for_model(loaded.tokenizer, spec.chat_template)
    settings = EvalSettings(batch_size=8)

    def run(precision: str) -> scoring.ScoreResult:
        return scoring.score(loaded.model, fmt, examples, task, settings, device="cpu", precision=precision)

    run("fp32"), run("bf16")  # warm-up: first-call allocations and kernels
    bf16_seconds: list[float] = []
    results: dict[str, scoring.ScoreResult] = {}

    def fp32_then_bf16() -> None:
        results["fp32"] = run("fp32")
        start = time.perf_counter()
        results["bf16"] = run("bf16")
        bf16_seconds.append(time.perf_counter() - start)

    # pytest-benchmark times the pair; the fp32 share is the pair minus bf16's own clock.
    benchmark.pedantic(fp32_then_bf16, rounds=ROUNDS, iterations=1)
    pairs = benchmark.stats.stats.data
    fp32_seconds = [pair - bf16 for pair, bf16 in zip(pairs, bf16_seconds, strict=True)]
    fp32_median, bf16_median = statistics.median(fp32_seconds), statistics.median(bf16_seconds)
    fp32, bf16 = results["fp32"], results["bf16"]
    disagree = sum(
        a["choice"] != b["choice"] for a, b in zip(fp32.predictions, bf16.predictions, strict=True)
    )
    figures = {
        "examples": len(examples),
        "fp32_median_seconds": round(fp32_median, 3),
        "bf16_median_seconds": round(bf16_median, 3),
        "fp32_over_bf16": round(fp32_median / bf16_median, 2),
        "ties_fp32": fp32.inference["tied_predictions"],
        "ties_bf16": bf16.inference["tied_predictions"],
        "predictions_that_differ": disagree,
        "accuracy_fp32": fp32.metrics["accuracy"],
        "accuracy_bf16": bf16.metrics["accuracy"],
    }
    benchmark.extra_info.update(figures)
    print(f"\n[{task_name}] " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    assert figures["ties_fp32"] <= figures["ties_bf16"]
