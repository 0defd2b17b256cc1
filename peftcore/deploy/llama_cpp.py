"""A GGUF variant run where it is deployed: llama.cpp on the CPU, through llama-cpp-python.

llama-cpp-python is a C++ build from PyPI, opt-in (``make gguf-runtime``); without it the
GGUF variants are still written, read back and scored, and this part says why it is missing.
Greedy generation of ``max_new_tokens`` tokens for each prompt; the figures are our wall clock
and llama.cpp's own counters (``llama_perf_context``: prompt evaluation and generation times),
so they can be held against the numbers llama.cpp itself prints.
"""

from __future__ import annotations

import importlib.metadata
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def llama_cpp_missing() -> str | None:
    """Why llama.cpp cannot run here, or None when llama-cpp-python imports."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as err:
        return f"llama-cpp-python is not installed ({err.msg}); `make gguf-runtime` builds it"
    return None


def generation_speed(path: Path, prompts: Sequence[str], max_new_tokens: int, threads: int) -> dict[str, Any]:
    """Load ``path`` with llama.cpp and generate greedily after each prompt; the figures.

    Raises what llama-cpp-python raises (a file it cannot read, above all).
    """
    import llama_cpp

    start = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=2048, n_threads=threads, seed=0, verbose=False)
    load_seconds = time.perf_counter() - start
    context = llm._ctx.ctx
    llama_cpp.llama_perf_context_reset(context)
    generated = prompt_tokens = 0
    start = time.perf_counter()
    for prompt in prompts:
        out = llm.create_completion(prompt, max_tokens=max_new_tokens, temperature=0.0, top_k=1)
        generated += int(out["usage"]["completion_tokens"])
        prompt_tokens += int(out["usage"]["prompt_tokens"])
    seconds = time.perf_counter() - start
    perf = llama_cpp.llama_perf_context(context)
    llm.close()
    own_eval_seconds = perf.t_eval_ms / 1000
    own_prompt_seconds = perf.t_p_eval_ms / 1000
    return {
        "tool": f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')}",
        "threads": threads,
        "prompts": len(prompts),
        "load_seconds": round(load_seconds, 3),
        "prompt_tokens": prompt_tokens,
        "generated_tokens": generated,
        "seconds": round(seconds, 3),
        # wall clock over whole requests (prompt evaluation, sampling, detokenization included)
        "tokens_per_second": round(generated / max(seconds, 1e-9), 2),
        "latency_ms_per_prompt": round(1000 * seconds / max(len(prompts), 1), 2),
        # llama.cpp's own counters, as it prints them (eval time / prompt eval time)
        "llama_cpp_generated_tokens": int(perf.n_eval),
        "llama_cpp_eval_tokens_per_second": round(perf.n_eval / max(own_eval_seconds, 1e-9), 2),
        "llama_cpp_prompt_tokens_per_second": round(perf.n_p_eval / max(own_prompt_seconds, 1e-9), 2),
    }
