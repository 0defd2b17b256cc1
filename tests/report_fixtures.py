"""Synthetic but realistic case records (SmolLM2-135M on CPU, ``quick``-sized budget).

The figures are shaped like what peftcore measures: full fine-tuning needs the most memory and
stores a whole model; QLoRA trades time for memory; IA3 stores a few hundred KiB; the untrained
``base`` row has no training block. Values are deterministic (seeded by method, task, seed).
Written into a run folder with :func:`write_run`; a run's records, these or a session's, are
read back with :func:`read_cases`.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from peftcore.results.store import write_record
from peftcore.vocab.record import RECORD_FORMAT

MODEL = "smollm2-135m"
TOTAL_PARAMS = 134_515_008
GIB = 2**30
MIB = 2**20

# tuner, quantization, trainable params, adapter bytes, peak train memory, train seconds,
# quality gain over base (in metric points), inference latency ms/example, inference memory
METHODS: dict[str, tuple[str, str, int, int | None, float | None, float | None, float, float, float]] = {
    "base": ("none", "none", 0, None, None, None, 0.0, 41.0, 0.62 * GIB),
    "full": ("full", "none", TOTAL_PARAMS, 538_090_408, 2.31 * GIB, 402.0, 0.062, 40.0, 0.64 * GIB),
    "lora": ("lora", "none", 921_600, 3_702_232, 1.18 * GIB, 188.0, 0.045, 44.0, 0.63 * GIB),
    "qlora": ("lora", "nf4", 921_600, 3_702_232, 0.74 * GIB, 331.0, 0.038, 71.0, 0.29 * GIB),
    "dora": ("lora", "none", 995_328, 4_001_952, 1.35 * GIB, 243.0, 0.049, 52.0, 0.66 * GIB),
    "ia3": ("ia3", "none", 46_080, 189_344, 1.10 * GIB, 171.0, 0.021, 43.0, 0.62 * GIB),
}

# task type, metrics (primary first), base model's held-out values
TASKS: dict[str, tuple[str, tuple[str, ...], dict[str, float]]] = {
    "arc_easy": ("multiple_choice", ("accuracy", "accuracy_norm"), {"accuracy": 0.43, "accuracy_norm": 0.40}),
    "sst2": ("classification", ("accuracy", "macro_f1"), {"accuracy": 0.58, "macro_f1": 0.52}),
    "squad": ("generation", ("f1", "exact_match"), {"f1": 0.31, "exact_match": 0.17}),
    "lambada": ("language_modeling", ("perplexity",), {"perplexity": 38.0}),
}


def make_record(
    method: str,
    task: str,
    *,
    seed: int | None = None,
    status: str = "finished",
    reason: str | None = None,
    run_id: str = "20260101-120000-quick",
    model: str = MODEL,
    profile: str = "quick",
    held_out: Mapping[str, float] | None = None,
    **blocks: Any,
) -> dict[str, Any]:
    """One record; ``held_out`` replaces metric values, ``training={...}`` etc. update blocks."""
    tuner, quant, trainable, adapter, peak, seconds, gain, latency, infer_mem = METHODS[method]
    task_type, metric_names, base_values = TASKS[task]
    rng = random.Random(f"{method}/{task}/{seed}")
    jitter = rng.uniform(-0.008, 0.008) if seed is not None else 0.0
    suffix = f"-seed{seed}" if seed is not None else ""
    case_id = f"{method}-{model}-{task}{suffix}"
    train_seed = 0 if seed is None else seed

    held: dict[str, float] = {}
    seen: dict[str, float] = {}
    for name, value in base_values.items():
        if name == "perplexity":  # lower is better: training lowers it
            held[name] = round(value * (1 - 3 * gain) * (1 + jitter), 4)
            seen[name] = round(held[name] * (1 - 4 * gain), 4)
        else:
            held[name] = round(value + gain + jitter, 4)
            seen[name] = round(min(1.0, held[name] + 2.5 * gain), 4)
    if held_out:
        held.update(held_out)

    training: dict[str, Any] | None = None
    if tuner != "none":
        steps = 30
        start = 2.9 if task_type != "language_modeling" else 3.4
        floor = 1.1 + (0.3 if quant != "none" else 0.0) - 4 * gain
        curve = [
            [step, round(floor + (start - floor) * math.exp(-step / 8) + rng.uniform(-0.05, 0.05), 4)]
            for step in range(1, steps + 1)
        ]
        assert peak is not None and seconds is not None
        train_tokens = 240 * 4 * 30 // 2
        time = seconds * (1 + rng.uniform(-0.04, 0.04))
        training = {
            "train_seconds": round(time, 2),
            "tokens_per_second": round(train_tokens / time, 2),
            "train_tokens": train_tokens,
            "steps": steps,
            "peak_memory_bytes": int(peak * (1 + rng.uniform(-0.01, 0.01))),
            "peak_reserved_bytes": int(peak * 1.08),
            "memory_method": "rss_delta",
            "trainable_params": trainable,
            "total_params": TOTAL_PARAMS + (trainable if tuner not in ("full", "none") else 0),
            "trainable_percent": round(100 * trainable / TOTAL_PARAMS, 4),
            "adapter_bytes": adapter,
            "final_loss": curve[-1][1],
            "loss_curve": curve,
        }

    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "run_id": run_id,
        "case_id": case_id,
        "case_hash": hashlib.sha256(f"{method}/{model}/{task}/{train_seed}".encode()).hexdigest()[:16],
        "profile": profile,
        "method": method,
        "model": model,
        "task": task,
        "seed": train_seed,
        "status": status,
        "reason": reason,
        "spec": {
            "profile": profile,
            "method": {"name": method, "tuner": tuner, "base": {"quantization": quant}},
            "model": {"name": model, "params": "135M"},
            "task": {"name": task, "type": task_type, "metrics": list(metric_names)},
            "training": {
                "max_steps": 30,
                "batch_size": 4,
                "max_length": 256,
                "learning_rate": 2e-4,
                "seed": train_seed,
            },
            "data": {"train": 240, "held_out": 100, "seen": 50, "split_seed": 1234},
            "eval": {"batch_size": 8},
        },
        "base_model": {
            "load_seconds": 2.4 if quant == "none" else 6.1,
            "footprint_bytes": 538_090_408 if quant == "none" else 130_812_032,
            "quantization": quant,
            "dtype": "fp32",
        },
        "training": training,
        "metrics": {"held_out": held, "seen": seen},
        "inference": {
            "latency_ms_per_example": round(latency * (1 + rng.uniform(-0.03, 0.03)), 2),
            "examples_per_second": round(1000 / latency, 2),
            "peak_memory_bytes": int(infer_mem),
            "memory_method": "rss_delta",
        },
        "provenance": {
            "versions": {"torch": "2.13.0", "transformers": "5.23.0", "peft": "0.21.2", "peftcore": "0.1.0"},
            "device": "cpu",
            "model_sha256": "ab" * 32,
            "data_sha256": "cd" * 32,
            "split_sha256": "ef" * 32,
            "git_commit": "25c4c71d0e9f",
            "git_dirty": False,
            "started_at": "2026-01-01T12:00:00",
            "finished_at": "2026-01-01T12:06:00",
            "host": "ci-runner",
        },
        "adapter_dir": f"adapters/{case_id}" if tuner not in ("none",) else None,
    }
    if status != "finished":
        record["reason"] = reason or "out of memory: tried to allocate 1.50 GiB"
        record["metrics"] = {"held_out": {}, "seen": {}}
        record["training"] = None
        record["inference"] = None
        record["adapter_dir"] = None
    for block, values in blocks.items():
        if isinstance(values, Mapping) and isinstance(record.get(block), dict):
            record[block].update(values)
        else:
            record[block] = copy.deepcopy(values)
    return record


def scored(
    record: dict[str, Any],
    scores: Mapping[str, Sequence[float]],
    *,
    split: str = "held_out",
    uids: Sequence[str] | None = None,
) -> dict[str, Any]:
    """``record`` scored on known examples, as peftcore keeps them: ``scores`` are per-example
    scores by metric (examples ``ex-000``, ``ex-001``, ... unless ``uids``); each metric's value
    becomes their mean and its ``uncertainty`` the interval peftcore computes for them."""
    from peftcore.score.uncertainty import metric_intervals

    n = len(next(iter(scores.values())))
    block = {
        "uid": list(uids or (f"ex-{i:03d}" for i in range(n))),
        "scores": {k: list(v) for k, v in scores.items()},
    }
    means = {name: sum(values) / len(values) for name, values in scores.items()}
    record["metrics"].setdefault(split, {}).update(means)
    record.setdefault("uncertainty", {})[split] = metric_intervals(means, block)
    record.setdefault("examples", {})[split] = block
    return record


def grid(
    methods: Iterable[str] = ("base", "full", "lora", "qlora", "dora", "ia3"),
    tasks: Iterable[str] = ("arc_easy", "squad"),
    seeds: Iterable[int | None] = (None,),
    **kwargs: Any,
) -> list[dict[str, Any]]:
    return [make_record(m, t, seed=s, **kwargs) for t in tasks for m in methods for s in seeds]


def write_run(results_dir: Path, run_id: str, records: Iterable[Mapping[str, Any]]) -> Path:
    run_dir = results_dir / run_id
    for record in records:
        write_record(run_dir, {**record, "run_id": run_id})
    (run_dir / "cases").mkdir(parents=True, exist_ok=True)
    return run_dir


def read_cases(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each case record of the run folder ``run_dir``, by case id (as a session wrote them)."""
    return {p.stem: json.loads(p.read_text()) for p in sorted((run_dir / "cases").glob("*.json"))}


def write_benchmark_json(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """A pytest-benchmark ``--benchmark-save`` file whose benchmarks carry peftcore records."""
    benchmarks = [
        {
            "group": None,
            "name": f"test_case[{r['case_id']}]",
            "fullname": f"benchmarks/test_benchmarks.py::test_case[{r['case_id']}]",
            "params": {"case": r["case_id"]},
            "param": r["case_id"],
            "extra_info": {"peftcore_record": dict(r)},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": 1},
            "stats": {"min": 1.0, "max": 1.0, "mean": 1.0, "stddev": 0, "rounds": 1, "median": 1.0},
        }
        for r in records
    ]
    data = {
        "machine_info": {"node": "ci-runner", "python_version": "3.11.2"},
        "commit_info": {"id": "25c4c71d0e9f", "dirty": False},
        "benchmarks": benchmarks,
        "datetime": "2026-01-01T12:06:00",
        "version": "5.3.1",
    }
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def chromium() -> str:
    """The Chromium binary. Without one the browser tests skip on a workstation and fail in CI
    (``CI`` set, as CI services and ``.ci/run`` do): a check that silently stops running is not
    a check."""
    found = shutil.which("chromium") or next((p for p in ("/usr/bin/chromium",) if os.path.exists(p)), None)
    if found is None:
        reason = "Chromium is not installed (make browser, or apt-get install -y chromium)"
        if os.environ.get("CI", "").lower() not in ("", "0", "false", "no"):
            pytest.fail(f"{reason}; CI is set, so the browser checks must run", pytrace=False)
        pytest.skip(reason)
    return found


def chromium_flags(profile: Path) -> list[str]:
    """Headless Chromium with nothing of its own going to the network, in a fresh profile."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]
