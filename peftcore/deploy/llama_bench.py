"""A GGUF variant's speed and memory as llama.cpp reports them: ``llama-bench``, run as a child.

``llama-bench -m <file> -t <threads> -p <prompt tokens> -n <generated tokens> -r <repetitions>
-o json`` times two tests on the file: prompt processing (``pp<P>``, one batch of P tokens) and
text generation (``tg<N>``, N tokens one at a time), each repeated, and prints every repetition's
tokens/s. We keep llama.cpp's own mean and standard deviation and the samples, so the figure
carries its spread, and the child's peak resident memory (``wait4``'s ``ru_maxrss``: llama-bench
maps the file and allocates the KV cache and compute buffers of one context, as a server would).

llama-bench feeds random tokens: the figures are the runtime's speed on the file's shapes, not on
the task's prompts (the variant's ms/example from transformers is beside it in the report).
The tool is built by :mod:`peftcore.deploy.llama_tools` (``make llama-cpp``).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from peftcore.deploy.llama_tools import SOURCE_PACKAGE, SOURCE_VERSION, LlamaTools

BENCH_TIMEOUT_S = 600  # pp128 + tg32 of a 135M model take seconds; a 7B on 2 cores, minutes


class BenchError(RuntimeError):
    """llama-bench failed, timed out or printed what we cannot read; the message says which."""


def bench_command(
    tools: LlamaTools, path: Path, *, threads: int, prompt_tokens: int, generate_tokens: int, repetitions: int
) -> list[str]:
    """The command line (llama.cpp's defaults otherwise: batch 2048, ubatch 512, f16 KV cache)."""
    return [
        str(tools.bench),
        "-m",
        str(path),
        "-t",
        str(threads),
        "-p",
        str(prompt_tokens),
        "-n",
        str(generate_tokens),
        "-r",
        str(repetitions),
        "-o",
        "json",
    ]


def parse_bench_json(text: str) -> dict[str, Any]:
    """llama-bench's JSON (a list with one object per test) as our figures.

    ``prompt`` is the test with ``n_gen == 0``, ``generation`` the one with ``n_prompt == 0``;
    each: ``tokens`` (P or N), ``tokens_per_second`` (llama.cpp's ``avg_ts``), ``sd`` (its
    ``stddev_ts``), ``samples`` (``samples_ts``, one per repetition). ``BenchError`` when the
    text is not such a list or a test is missing.
    """
    try:
        tests = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{err.msg} at char {err.pos}"
        raise BenchError(f"llama-bench printed no JSON ({where}): {text[:200]!r}") from None
    if not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise BenchError(f"llama-bench's JSON is not a list of tests: {text[:200]!r}")
    out: dict[str, Any] = {}
    for test in tests:
        try:
            n_prompt, n_gen = int(test["n_prompt"]), int(test["n_gen"])
            figures = {
                "tokens": n_prompt or n_gen,
                "tokens_per_second": round(float(test["avg_ts"]), 2),
                "sd": round(float(test["stddev_ts"]), 2),
                "samples": [round(float(s), 2) for s in test.get("samples_ts") or []],
            }
        except (KeyError, TypeError, ValueError) as err:
            raise BenchError(f"llama-bench test without {err}: {json.dumps(test)[:200]}") from None
        out["prompt" if n_gen == 0 else "generation"] = figures
        for key in ("build_commit", "build_number", "cpu_info", "model_size", "model_n_params", "n_threads"):
            if key in test:
                out.setdefault(key, test[key])
    missing = [name for name in ("prompt", "generation") if name not in out]
    if missing:
        raise BenchError(f"llama-bench printed no {' or '.join(missing)} test: {text[:200]!r}")
    return out


def run_bench(
    tools: LlamaTools, path: Path, *, threads: int, prompt_tokens: int, generate_tokens: int, repetitions: int
) -> dict[str, Any]:
    """Run llama-bench on ``path``; its figures (:func:`parse_bench_json`), the child's peak
    resident memory and the wall time. ``BenchError`` when it fails or times out."""
    command = bench_command(
        tools,
        path,
        threads=threads,
        prompt_tokens=prompt_tokens,
        generate_tokens=generate_tokens,
        repetitions=repetitions,
    )
    start = time.perf_counter()
    # Popen + os.wait4 rather than subprocess.run: wait4 returns the rusage of this one child,
    # its peak memory (RUSAGE_CHILDREN would be the largest of every child ever waited for).
    # Its output goes to files, so waiting cannot block on a full pipe.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        timed_out = threading.Event()

        def stop() -> None:
            timed_out.set()
            proc.kill()

        timer = threading.Timer(BENCH_TIMEOUT_S, stop)
        timer.start()
        try:
            _, status, rusage = os.wait4(proc.pid, 0)
        except BaseException:  # a signal's KeyboardInterrupt: no llama-bench left behind
            proc.kill()
            proc.wait()
            raise
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if timed_out.is_set():
        raise BenchError(f"llama-bench on {path.name} took over {BENCH_TIMEOUT_S} s and was killed")
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = stderr.decode(errors="replace").strip().splitlines()[-3:]
        raise BenchError(f"llama-bench on {path.name} exited {proc.returncode}: {' | '.join(tail)}")
    figures = parse_bench_json(stdout.decode(errors="replace"))
    build = figures.pop("build_commit", "?")
    return {
        "status": "finished",
        "tool": f"llama-bench ({SOURCE_PACKAGE} {SOURCE_VERSION} source, build {build})",
        "threads": threads,
        "repetitions": repetitions,
        **figures,
        "peak_rss_bytes": int(rusage.ru_maxrss) * 1024,  # Linux reports KiB
        "seconds": round(seconds, 3),
    }
