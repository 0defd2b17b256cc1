"""A case's deployment variants as rows of their own, for gates and reports.

A record keeps its variants inside it (``record["deploy"][<variant>]``, written by
:mod:`peftcore.pipeline.deploy`). Gates and reports treat each finished variant like a case
whose method is ``<method>@<variant>`` (``lora@nf4``): its metrics are the variant's, its
inference figures the variant's, its ``deployment`` block what it costs to ship (size on disk,
load and build time, llama.cpp tokens/s, llama-bench's prompt
and generation tokens/s and peak memory), and its training the case's (it was not trained again).
So ``compare: {metric: f1, case: lora@nf4, baseline: lora, max_drop: 0.02}`` works as any rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from peftcore.vocab.variants import variant_method

_DEPLOYMENT = ("size_bytes", "load_seconds", "build_seconds", "footprint_bytes")


def variant_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The finished deployment variants of a finished ``record``, each as a record-like row."""
    if record.get("status") != "finished":
        return []
    rows = []
    for name, block in (record.get("deploy") or {}).items():
        if not isinstance(block, Mapping) or block.get("status") != "finished":
            continue
        deployment = {k: block[k] for k in _DEPLOYMENT if isinstance(block.get(k), (int, float))}
        llama = block.get("llama_cpp") or {}
        if llama.get("status") == "finished":
            deployment["generation_tokens_per_second"] = llama["tokens_per_second"]
        bench = block.get("llama_bench") or {}
        if bench.get("status") == "finished":
            deployment["llama_bench_prompt_tokens_per_second"] = bench["prompt"]["tokens_per_second"]
            deployment["llama_bench_generation_tokens_per_second"] = bench["generation"]["tokens_per_second"]
            if isinstance(bench.get("peak_rss_bytes"), int):  # None where there is no /proc
                deployment["llama_bench_peak_rss_bytes"] = bench["peak_rss_bytes"]
        row = {k: v for k, v in record.items() if k not in ("deploy", "general_text", "predictions")}
        row.update(
            {
                "case_id": f"{record['case_id']}@{name}",
                "method": variant_method(str(record["method"]), name),
                "metrics": dict(block.get("metrics") or {}),
                "uncertainty": dict(block.get("uncertainty") or {}),
                "examples": dict(block.get("examples") or {}),
                "inference": block.get("inference"),
                "deployment": deployment,
                "variant_of": record["case_id"],
            }
        )
        rows.append(row)
    return rows


def with_variants(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """``records``, each followed by its finished deployment variants as rows."""
    out: list[Mapping[str, Any]] = []
    for record in records:
        out.append(record)
        out.extend(variant_rows(record))
    return out


def unbuilt_variants(record: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(variant, status, reason) of the variants the record asked for that did not finish."""
    return [
        (name, str(block.get("status")), str(block.get("reason") or ""))
        for name, block in (record.get("deploy") or {}).items()
        if isinstance(block, Mapping) and block.get("status") != "finished"
    ]
