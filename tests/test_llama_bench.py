"""llama-bench's speed and memory figures for GGUF variants (peftcore.deploy.llama_bench).

Fast: reading llama-bench's JSON, the child process's exit code, timeout and peak memory (a
stand-in program in its place), the figures in a variant's row and the report. Slow and skipped
with the reason until ``make llama-cpp`` has built the tools: the real llama-bench on the default
model's GGUF file.
"""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from peftcore.deploy import llama_bench, llama_tools
from peftcore.deploy.llama_bench import BenchError, parse_bench_json, run_bench
from peftcore.results.variants import variant_rows

# Two tests as llama-bench -o json prints them (fields trimmed to those we read and a few more).
BENCH_JSON = [
    {
        "build_commit": "abc1234",
        "build_number": 1,
        "cpu_info": "AMD EPYC",
        "model_size": 90_000_000,
        "model_n_params": 134_515_008,
        "n_threads": 2,
        "n_prompt": 128,
        "n_gen": 0,
        "avg_ts": 321.456,
        "stddev_ts": 4.21,
        "samples_ts": [318.0, 320.1, 326.2],
    },
    {
        "build_commit": "abc1234",
        "n_threads": 2,
        "n_prompt": 0,
        "n_gen": 32,
        "avg_ts": 180.04,
        "stddev_ts": 1.5,
        "samples_ts": [179.0, 181.5, 179.6],
    },
]


def test_the_json_gives_prompt_and_generation_speed_with_their_spread() -> None:
    figures = parse_bench_json(json.dumps(BENCH_JSON))
    samples = [318.0, 320.1, 326.2]
    assert figures["prompt"] == {"tokens": 128, "tokens_per_second": 321.46, "sd": 4.21, "samples": samples}
    assert figures["generation"]["tokens"] == 32 and figures["generation"]["tokens_per_second"] == 180.04
    assert figures["build_commit"] == "abc1234" and figures["model_n_params"] == 134_515_008


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("error: failed to load model", "printed no JSON"),
        (json.dumps({"n_prompt": 1}), "not a list of tests"),
        (json.dumps(BENCH_JSON[:1]), "no generation test"),
        (json.dumps([{"n_prompt": 8, "n_gen": 0}]), "without 'avg_ts'"),
    ],
)
def test_what_it_cannot_read_is_one_error_saying_what(text: str, says: str) -> None:
    with pytest.raises(BenchError, match=says):
        parse_bench_json(text)


def _stand_in(tmp_path: Path, body: str) -> llama_tools.LlamaTools:
    """Tools whose llama-bench is a Python script (``body`` runs with ``args`` = its argv)."""
    script = tmp_path / "llama-bench"
    script.write_text(f"#!{sys.executable}\nimport json, sys, time\nargs = sys.argv[1:]\n{body}\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return llama_tools.LlamaTools(tmp_path, tmp_path / "q", tmp_path / "p", script)


def _run(tools: llama_tools.LlamaTools, path: Path) -> dict[str, Any]:
    return run_bench(tools, path, threads=2, prompt_tokens=128, generate_tokens=32, repetitions=3)


def test_a_run_passes_the_settings_and_keeps_the_childs_peak_memory(tmp_path: Path) -> None:
    tools = _stand_in(
        tmp_path,
        "held = bytearray(300 << 20)\n"  # 300 MiB touched, held a while: the child's peak
        "held[::4096] = b'x' * len(held[::4096])\n"
        "time.sleep(0.5)\n"
        f"ok = args == {_expected_args(tmp_path)!r}\n"
        f"print(json.dumps({BENCH_JSON!r}) if ok else 'bad args ' + repr(args))",
    )
    # This process holds 600 MiB while it runs: a peak read from wait4's ru_maxrss would count
    # them (Linux charges the child the address space it was forked from) and fail the bound.
    ballast = bytearray(600 << 20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    figures = _run(tools, tmp_path / "model.gguf")
    del ballast
    assert figures["status"] == "finished" and figures["repetitions"] == 3 and figures["threads"] == 2
    assert figures["prompt"]["tokens_per_second"] == 321.46 and "abc1234" in figures["tool"]
    # its own peak: not the address space of this process, which it was forked from
    assert 300 << 20 < figures["peak_rss_bytes"] < 400 << 20


def _expected_args(tmp_path: Path) -> list[str]:
    path = str(tmp_path / "model.gguf")
    return ["-m", path, "-t", "2", "-p", "128", "-n", "32", "-r", "3", "-o", "json"]


def test_a_failing_llama_bench_is_one_error_with_its_exit_code_and_last_words(tmp_path: Path) -> None:
    words = "print('loading', file=sys.stderr)\nprint('error: bad magic', file=sys.stderr)\nsys.exit(3)"
    tools = _stand_in(tmp_path, words)
    with pytest.raises(BenchError, match=r"model\.gguf exited 3: loading \| error: bad magic"):
        _run(tools, tmp_path / "model.gguf")


def test_a_llama_bench_that_hangs_is_killed_at_the_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_bench, "BENCH_TIMEOUT_S", 0.5)
    tools = _stand_in(tmp_path, "time.sleep(60)")
    with pytest.raises(BenchError, match=r"over 0\.5 s and was killed"):
        _run(tools, tmp_path / "model.gguf")


def _record_with_bench(bench: dict[str, Any]) -> dict[str, Any]:
    variant = {
        "status": "finished",
        "metrics": {"held_out": {"brier_score": 0.3}},
        "size_bytes": 2**27,
        "llama_bench": bench,
    }
    return {
        "format": 1,
        "run_id": "r",
        "case_id": "lora-m-sst2",
        "method": "lora",
        "model": "m",
        "task": "sst2",
        "seed": 0,
        "status": "finished",
        "spec": {"task": {"metrics": ["brier_score"]}, "method": {"tuner": "lora"}},
        "metrics": {"held_out": {"brier_score": 0.25}},
        "training": {"peak_memory_bytes": 1},
        "deploy": {"gguf-q8_0": variant},
    }


def test_a_variants_row_and_the_report_carry_the_figures_with_their_spread(tmp_path: Path) -> None:
    from peftcore.report.deploy import deploy_md
    from peftcore.report.plots import draw_plots
    from peftcore.results.store import Run

    bench = {"status": "finished", **parse_bench_json(json.dumps(BENCH_JSON)), "peak_rss_bytes": 2**28}
    record = _record_with_bench(bench)
    deployment = variant_rows(record)[0]["deployment"]
    assert deployment["llama_bench_prompt_tokens_per_second"] == 321.46
    assert deployment["llama_bench_generation_tokens_per_second"] == 180.04
    assert deployment["llama_bench_peak_rss_bytes"] == 2**28
    row = next(line for line in deploy_md([record]) if line.startswith("| lora@gguf-q8_0 |"))
    assert row.endswith("| 321.5 ± 4.2 | 180 ± 1.5 | 256 MiB |")
    assert draw_plots(Run(tmp_path / "r", (record,), ()))["deploy"][0].png.startswith(b"\x89PNG")
    skipped = _record_with_bench({"status": "skipped", "reason": "not built"})
    assert "llama_bench_prompt_tokens_per_second" not in variant_rows(skipped)[0]["deployment"]
    assert next(line for line in deploy_md([skipped]) if "@gguf" in line).endswith("| — | — | — |")


@pytest.mark.slow
def test_the_real_llama_bench_times_the_default_models_gguf() -> None:
    tools = llama_tools.find_tools()
    if tools is None:
        pytest.skip(llama_tools.missing_reason() or "llama.cpp's tools are not built")
    from peftcore.models.checkpoints import gguf_path
    from peftcore.spec import SpecStore

    specs = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
    path = gguf_path(SpecStore(specs).get("models", "smollm2-135m"))
    figures = run_bench(tools, path, threads=2, prompt_tokens=32, generate_tokens=8, repetitions=2)
    for test in ("prompt", "generation"):
        assert figures[test]["tokens_per_second"] > 0 and len(figures[test]["samples"]) == 2
    assert figures["model_n_params"] > 100_000_000
    # the weights are mapped and read: the child's peak holds most of the file, and little more
    size = path.stat().st_size
    assert size // 2 < figures["peak_rss_bytes"] < size + (256 << 20)
