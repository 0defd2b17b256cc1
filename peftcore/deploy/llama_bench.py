"""A GGUF variant's speed and memory as llama.cpp reports them: ``llama-bench``, run as a child.

``llama-bench -m <file> -t <threads> -p <prompt tokens> -n <generated tokens> -r <repetitions>
-o json`` times two tests on the file: prompt processing (``pp<P>``, one batch of P tokens) and
text generation (``tg<N>``, N tokens one at a time), each repeated, and prints every repetition's
tokens/s. We keep llama.cpp's own mean and standard deviation and the samples, so the figure
carries its spread, and the child's peak resident memory (its ``VmHWM``, read from /proc while it
runs: the weights it maps and reads, the KV cache and compute buffers of one context).

llama-bench feeds random tokens: the figures are the runtime's speed on the file's shapes, not on
the task's prompts (the variant's ms/example from transformers is beside it in the report).
The tool is built by :mod:`peftcore.deploy.llama_tools` (``make llama-cpp``).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from peftcore.deploy.llama_tools import SOURCE_PACKAGE, SOURCE_VERSION, LlamaTools

BENCH_TIMEOUT_S = 600  # pp128 + tg32 of a 135M model take seconds; a 7B on 2 cores, minutes
POLL_S = 0.02  # how often the child's memory high-water mark is read


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
    name = Path(command[0]).name[:15]  # the kernel's comm of the program after exec
    start = time.perf_counter()
    # The peak is the child's own VmHWM, sampled while it runs: wait4's ru_maxrss would not do,
    # Linux counts in it the address space the child was forked from (this Python process's,
    # gigabytes with a model loaded) as well as the program it became. Output goes to files, so
    # the child never blocks on a full pipe.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err)
        peak: int | None = None
        try:
            while proc.poll() is None:
                peak = _high_water(proc.pid, name, peak)
                if time.perf_counter() - start > BENCH_TIMEOUT_S:
                    raise BenchError(
                        f"llama-bench on {path.name} took over {BENCH_TIMEOUT_S} s and was killed"
                    )
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:  # timed out, or a signal's KeyboardInterrupt: none left behind
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
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
        "peak_rss_bytes": peak,  # None where there is no /proc (not Linux)
        "seconds": round(seconds, 3),
    }


def _high_water(pid: int, name: str, peak: int | None) -> int | None:
    """``peak`` raised to the process's VmHWM (bytes) once it runs ``name`` (before its exec it is
    still a copy of this process); unchanged when /proc cannot tell."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return peak
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    if fields.get("Name", "").strip() != name or "VmHWM" not in fields:
        return peak  # not exec'd yet, or a zombie (its memory already released)
    high_water = int(fields["VmHWM"].split()[0]) * 1024  # "VmHWM:   133504 kB"
    return high_water if peak is None else max(peak, high_water)
