"""Deployment variants in the report: per task, quality against size on disk and latency.

For each (model, task) whose records carry deployment variants (profile ``deploy:``), a table
with one row per case and each of its variants: the held-out primary metric and its change
against the case as trained (the unmerged adapter), the size on disk, load time, latency per
example, examples per second and inference peak memory; for GGUF files, llama.cpp's generation
tokens/s when llama-cpp-python ran them, and llama-bench's prompt and generation tokens/s (mean
± sd over its repetitions) and peak memory when ``make llama-cpp`` built it. Variants that were
not built (a tuner that cannot merge) are listed with the reason. summary.csv carries one row
per variant (:func:`peftcore.results.variants.with_variants`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from peftcore.report.formats import DASH
from peftcore.results.compare import CompareError, compare
from peftcore.results.variants import unbuilt_variants, variant_rows
from peftcore.units import format_bytes
from peftcore.vocab.quantities import format_value
from peftcore.vocab.record import primary_metric


def _num(block: Mapping[str, Any] | None, key: str) -> float | None:
    value = (block or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _change(variant: Mapping[str, Any], case: Mapping[str, Any], metric: str, delta: float | None) -> str:
    """The variant's change against the case as trained, with its 95% interval paired over the
    examples both were scored on (``+0.0050 [-0.0021, +0.0121]``); the bare change when either
    has no per-example scores of the metric."""
    if delta is None:
        return DASH
    try:
        change = compare(variant, case, metric)
    except (CompareError, LookupError, TypeError):  # no or malformed per-example scores
        return _cell(delta, "signed")
    return f"{change.difference:+.4f} [{change.low:+.4f}, {change.high:+.4f}]"


def _cell(value: float | None, kind: str) -> str:
    if value is None:
        return DASH
    if kind == "bytes":
        return format_bytes(value)
    if kind == "signed":
        return f"{value:+.4f}"
    return f"{value:.4g}"


HEADER = (
    "Case",
    "Metric",
    "Δ",
    "Size on disk",
    "Load s",
    "ms/example",
    "examples/s",
    "Inference peak",
    "llama.cpp tokens/s",
    "llama-bench prompt tokens/s",
    "llama-bench generation tokens/s",
    "llama-bench peak",
)


@dataclass(frozen=True)
class DeployPoint:
    """One row's numbers for the plot: the case as trained (``variant`` None) or a variant."""

    method: str  # the case's method (the color in the plot)
    variant: str | None
    metric: float | None
    size_bytes: float | None  # variants only: what ships
    latency_ms: float | None
    generation_tps: float | None = None  # GGUF variants: llama-bench's generation tokens/s


@dataclass(frozen=True)
class DeployTable:
    """The variants of every case of one (model, task): table cells, plot points, and notes on
    variants that were not built."""

    model: str
    task: str
    metric: str
    rows: list[list[str]]
    points: list[DeployPoint]
    notes: list[str]

    @property
    def title(self) -> str:
        return f"{self.task} · {self.model} (held-out {self.metric})"


def deploy_tables(records: Iterable[Mapping[str, Any]]) -> list[DeployTable]:
    """One table per (model, task) whose finished records carry deployment variants, in order."""
    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get("status") == "finished" and record.get("deploy"):
            groups.setdefault((str(record["model"]), str(record["task"])), []).append(record)
    tables = []
    for (model, task), cases in sorted(groups.items()):
        metric = primary_metric(cases[0]) or ""
        rows, points, notes = [], [], []
        for record in cases:
            own = _num((record.get("metrics") or {}).get("held_out"), metric)
            for row, variant in [(record, None), *((r, r) for r in variant_rows(record))]:
                value = _num((row.get("metrics") or {}).get("held_out"), metric)
                deployment = (variant or {}).get("deployment") or {}
                inference = row.get("inference") or {}
                delta = value - own if variant is not None and value is not None and own is not None else None
                latency = _num(inference, "latency_ms_per_example")
                name = str(row["method"]).partition("@")[2] if variant is not None else None
                rows.append(
                    [
                        str(row["method"]),
                        format_value(metric, value),
                        _change(row, record, metric, delta) if variant is not None else DASH,
                        _cell(_num(deployment, "size_bytes"), "bytes"),
                        _cell(_num(deployment, "load_seconds"), "number"),
                        _cell(latency, "number"),
                        _cell(_num(inference, "examples_per_second"), "number"),
                        _cell(_num(inference, "peak_memory_bytes"), "bytes"),
                        _cell(_num(deployment, "generation_tokens_per_second"), "number"),
                        *_bench_cells(record, name),
                    ]
                )
                size = _num(deployment, "size_bytes")
                tps = _num(deployment, "llama_bench_generation_tokens_per_second")
                points.append(DeployPoint(str(record["method"]), name, value, size, latency, tps))
            for variant_name, status, reason in unbuilt_variants(record):
                notes.append(f"{record['method']}@{variant_name}: {status.replace('_', ' ')} ({reason})")
        tables.append(DeployTable(model, task, metric, rows, points, notes))
    return tables


def _bench_cells(record: Mapping[str, Any], name: str | None) -> list[str]:
    """llama-bench's prompt and generation tokens/s (``mean ± sd``) and peak memory of the variant
    ``name`` (the record's ``deploy`` block keeps the spread); dashes for the case itself (None)
    and a variant llama-bench did not time."""
    if name is None:
        return [DASH] * 3
    bench = ((record.get("deploy") or {}).get(name) or {}).get("llama_bench") or {}
    if bench.get("status") != "finished":
        return [DASH] * 3
    speeds = [f"{bench[t]['tokens_per_second']:.4g} ± {bench[t]['sd']:.2g}" for t in ("prompt", "generation")]
    return [*speeds, _cell(_num(bench, "peak_rss_bytes"), "bytes")]


LEAD = (
    "Each variant is built from the case's saved adapter (merged, then quantized or exported) and "
    "scored on the same held-out examples; Δ is against the case as trained (the unmerged adapter), "
    "with its 95% interval paired over those examples when both kept per-example scores."
)


def deploy_md(records: Iterable[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of the deployment section (none when no record has variants)."""
    tables = deploy_tables(records)
    if not tables:
        return []
    lines = ["## Deployment variants", "", LEAD, ""]
    for table in tables:
        lines += [f"### {table.title}", ""]
        lines.append("| " + " | ".join(HEADER) + " |")
        lines.append("|---|" + "---:|" * (len(HEADER) - 1))
        lines += ["| " + " | ".join(cells) + " |" for cells in table.rows]
        lines.append("")
        lines.extend(f"- {note}" for note in table.notes)
        if table.notes:
            lines.append("")
    return lines
