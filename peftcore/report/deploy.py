"""Deployment variants in the report: per task, quality against size on disk and latency.

For each (model, task) whose records carry deployment variants (profile ``deploy:``), a table
with one row per case and each of its variants: the held-out primary metric and its change
against the case as trained (the unmerged adapter), the size on disk, load time, latency per
example, examples per second and inference peak memory, and llama.cpp's generation tokens/s
for GGUF files when it ran. Variants that were not built (a tuner that cannot merge) are listed
with the reason. summary.csv carries one row per variant
(:func:`peftcore.results.variants.with_variants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from peftcore.report.formats import DASH
from peftcore.results.quantities import format_value
from peftcore.results.record import primary_metric
from peftcore.results.variants import unbuilt_variants, variant_rows
from peftcore.units import format_bytes


def _num(block: Mapping[str, Any] | None, key: str) -> float | None:
    value = (block or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return DASH
    if kind == "bytes":
        return format_bytes(value)
    if kind == "signed":
        return f"{value:+.4f}"
    return f"{value:.4g}"


def deploy_md(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of the deployment section (none when no record has variants)."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get("status") == "finished" and record.get("deploy"):
            groups.setdefault((str(record["model"]), str(record["task"])), []).append(record)
    if not groups:
        return []
    lines = [
        "## Deployment variants",
        "",
        "Each variant is built from the case's saved adapter (merged, then quantized or exported) and "
        "scored on the same held-out examples; Δ is against the case as trained (the unmerged adapter).",
        "",
    ]
    header = [
        "Case",
        "Metric",
        "Δ",
        "Size on disk",
        "Load s",
        "ms/example",
        "examples/s",
        "Inference peak",
        "llama.cpp tokens/s",
    ]
    for (model, task), cases in sorted(groups.items()):
        metric = primary_metric(cases[0]) or ""
        lines += [f"### {task} · {model} (held-out {metric})", ""]
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|---|" + "---:|" * (len(header) - 1))
        notes = []
        for record in cases:
            own = _num((record.get("metrics") or {}).get("held_out"), metric)
            rows = [
                (str(record["method"]), record, None),
                *((r["method"], r, r) for r in variant_rows(record)),
            ]
            for name, row, variant in rows:
                value = _num((row.get("metrics") or {}).get("held_out"), metric)
                deployment = (variant or {}).get("deployment") or {}
                inference = row.get("inference") or {}
                delta = value - own if variant is not None and value is not None and own is not None else None
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            name,
                            format_value(metric, value),
                            _cell(delta, "signed"),
                            _cell(_num(deployment, "size_bytes"), "bytes"),
                            _cell(_num(deployment, "load_seconds"), "number"),
                            _cell(_num(inference, "latency_ms_per_example"), "number"),
                            _cell(_num(inference, "examples_per_second"), "number"),
                            _cell(_num(inference, "peak_memory_bytes"), "bytes"),
                            _cell(_num(deployment, "generation_tokens_per_second"), "number"),
                        ]
                    )
                    + " |"
                )
            for variant_name, status, reason in unbuilt_variants(record):
                notes.append(f"{record['method']}@{variant_name}: {status.replace('_', ' ')} ({reason})")
        lines.append("")
        lines.extend(f"- {note}" for note in notes)
        if notes:
            lines.append("")
    return lines
