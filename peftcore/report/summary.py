"""The summary of one (model, task): its title, its table's columns, its best methods, its highlights.

summary.md (:mod:`peftcore.report.tables`) and the page's highlights and tables
(:mod:`peftcore.report.html`) render the same :class:`GroupSummary` per (model, task), so both
show the same columns, numbers, Pareto marks and findings.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peftcore.report.formats import (
    DASH,
    decimals,
    fmt_bytes,
    fmt_count,
    fmt_metric,
    fmt_ms,
    fmt_percent,
    fmt_seconds,
    fmt_value,
)
from peftcore.report.rows import (
    Groups,
    Row,
    Stat,
    group_title,
    held_out_metrics,
    pareto_methods,
    primary_note,
    primary_of,
    seeded,
)
from peftcore.results.quantities import Quantity, higher_is_better


@dataclass(frozen=True)
class Column:
    """A column of the summary table: its header, the quantity it shows, and a row's cell text."""

    header: str
    quantity: Quantity
    render: Callable[[Row], str]


def _column(header: str, quantity: Quantity, fmt: Callable[[Stat], str]) -> Column:
    def render(row: Row) -> str:
        stat = row.stat(quantity)
        return fmt(stat) if stat is not None else DASH

    return Column(header, quantity, render)


def _params_cell(row: Row) -> str:
    params = row.stat(Quantity("training", "trainable_params"))
    if params is None:
        return DASH
    percent = row.stat(Quantity("training", "trainable_percent"))
    return fmt_count(params.mean) + (f" ({fmt_percent(percent.mean)})" if percent else "")


def table_columns(rows: Sequence[Row]) -> list[Column]:
    """The summary table's columns for one (model, task): costs, then each metric held-out and seen."""
    columns = [
        _column("Peak train memory", Quantity("training", "peak_memory_bytes"), fmt_bytes),
        _column("Train time", Quantity("training", "train_seconds"), fmt_seconds),
        _column("MFU", Quantity("training", "mfu"), lambda stat: fmt_percent(100 * stat.mean)),
        _column("Adapter size", Quantity("training", "adapter_bytes"), fmt_bytes),
        Column("Trainable params", Quantity("training", "trainable_params"), _params_cell),
    ]
    for metric in held_out_metrics(rows):
        columns.append(_column(f"Held-out {metric}", Quantity("held_out", metric), fmt_metric))
        columns.append(_column(f"Seen {metric}", Quantity("seen", metric), fmt_metric))
    columns.append(_column("Latency", Quantity("inference", "latency_ms_per_example"), fmt_ms))
    columns.append(_column("Inference memory", Quantity("inference", "peak_memory_bytes"), fmt_bytes))
    return columns


def best_method(rows: Sequence[Row], quantity: Quantity) -> str | None:
    """The method with the best mean of ``quantity`` by its direction; None with fewer than two
    values to compare or when the quantity declares no direction."""
    direction = higher_is_better(quantity.name)
    scored = [(s.mean, r.method) for r in rows if (s := r.stat(quantity)) and not math.isnan(s.mean)]
    if direction is None or len(scored) < 2:
        return None
    return (max(scored) if direction else min(scored))[1]


def highlights(rows: Sequence[Row]) -> list[str]:
    """One-line findings for a (model, task): best quality, cheapest memory, smallest adapter."""
    metric = primary_of(rows)
    lines = []
    if metric:
        quality = Quantity("held_out", metric)
        best = best_method(rows, quality)
        base = next((r for r in rows if not r.trains), None)
        if best:
            row = next(r for r in rows if r.method == best)
            stat = row.stat(quality)
            assert stat is not None
            gain = ""
            base_stat = base.stat(quality) if base and base is not row else None
            if base_stat and not math.isnan(base_stat.mean):
                delta = stat.mean - base_stat.mean
                gain = f" ({delta:+.{decimals(stat.mean, 3)}f} vs {base.method if base else ''})"
            lines.append(f"best held-out {metric}: {best} {fmt_value(stat.mean)}{gain}")
    trained = [r for r in rows if r.trains]
    for name, words, fmt in (
        ("peak_memory_bytes", "lowest peak training memory", fmt_bytes),
        ("train_seconds", "fastest training", fmt_seconds),
        ("adapter_bytes", "smallest adapter", fmt_bytes),
    ):
        quantity = Quantity("training", name)
        best = best_method(trained, quantity)
        if best:
            stat = next(r for r in trained if r.method == best).stat(quantity)
            assert stat is not None
            lines.append(f"{words}: {best} {fmt(Stat(stat.mean, None, 1))}")
    front = pareto_methods(rows, metric)
    if front:
        lines.append(f"quality/memory Pareto front: {', '.join(front)}")
    return lines


@dataclass(frozen=True)
class GroupSummary:
    """What the summary of one (model, task) says, whatever it is rendered as."""

    title: str  # the task, and the model when the run has several
    note: str | None  # the model and primary metric with its direction; None without a metric
    rows: Sequence[Row]
    columns: list[Column]
    front: list[str]  # the methods on the quality/memory Pareto front
    seeds_column: bool  # whether a row merges several seeds (then the table counts them)
    highlights: list[str]


def summarize(groups: Groups) -> list[GroupSummary]:
    """One summary per (model, task) of :func:`~peftcore.report.rows.group_rows`, in its order."""
    summaries = []
    for (model, task), rows in groups.items():
        metric = primary_of(rows)
        summaries.append(
            GroupSummary(
                title=group_title(model, task, groups),
                note=primary_note(model, metric) if metric else None,
                rows=rows,
                columns=table_columns(rows),
                front=pareto_methods(rows, metric),
                seeds_column=seeded(rows),
                highlights=highlights(rows),
            )
        )
    return summaries
