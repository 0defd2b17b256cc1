"""The summary of one (model, task): its title, its table's columns, its best methods, its highlights.

summary.md (:mod:`peftcore.report.tables`) and the page's highlights and tables
(:mod:`peftcore.report.html`) render the same :class:`GroupSummary` per (model, task), so both
show the same columns, numbers, intervals, Pareto marks, paired comparisons and findings. A
"best" is only named when a paired test tells it from the runner-up (:mod:`peftcore.report.certainty`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from peftcore.report.certainty import (
    GroupCertainty,
    assess,
    bare_note,
    comparison_table,
    difference_words,
    half_width,
    has_intervals,
    p_words,
)
from peftcore.report.comparison import Table
from peftcore.report.formats import (
    DASH,
    decimals,
    fmt_bytes,
    fmt_count,
    fmt_metric_interval,
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
from peftcore.vocab.quantities import Quantity, higher_is_better


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


def _metric_column(header: str, quantity: Quantity, over_seeds: bool) -> Column:
    def render(row: Row) -> str:
        stat = row.stat(quantity)
        if stat is None:
            return DASH
        return fmt_metric_interval(stat, half_width(row, quantity), over_seeds=over_seeds)

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
    over_seeds = seeded(rows)
    for metric in held_out_metrics(rows):
        columns.append(_metric_column(f"Held-out {metric}", Quantity("held_out", metric), over_seeds))
        columns.append(_metric_column(f"Seen {metric}", Quantity("seen", metric), over_seeds))
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


def _gain_words(row: Row, base: Row | None, certainty: GroupCertainty) -> str:
    """``+0.190 vs base, beyond noise: Holm p < 0.001``; the bare difference when it was not
    tested; empty without a base to compare with."""
    quality = Quantity("held_out", certainty.metric or "")
    stat, base_stat = row.stat(quality), base.stat(quality) if base and base is not row else None
    if stat is None or base is None or base_stat is None or math.isnan(base_stat.mean):
        return ""
    words = f"{stat.mean - base_stat.mean:+.{decimals(stat.mean, 3)}f} vs {base.method}"
    paired = certainty.against_reference(row.method) if certainty.reference_is_base else None
    if paired is None or paired.comparison is None:
        return words
    p = f"Holm {p_words(paired.holm_p)}" if paired.holm_p is not None else p_words(paired.comparison.p_value)
    return words + (", beyond noise: " if paired.significant else ", within noise: ") + p


def _quality_line(rows: Sequence[Row], certainty: GroupCertainty) -> str | None:
    """The best held-out primary metric, named only when a paired test tells it from the
    runner-up; else the two that are tied within noise, or untested."""
    metric, lead = certainty.metric, certainty.lead
    if metric is None or lead is None:
        return None
    quality = Quantity("held_out", metric)
    by_method = {r.method: r for r in rows}
    best, runner_up = by_method[lead.a], by_method[lead.b]
    stat = best.stat(quality)
    assert stat is not None
    base = next((r for r in rows if not r.trains), None)
    gain = _gain_words(best, base, certainty)
    value = f"{best.method} {fmt_value(stat.mean)}"
    if lead.comparison is None:
        untested = f"; not tested against {runner_up.method}: {lead.why_not}"
        return f"highest held-out {metric}: {value}" + (f" ({gain})" if gain else "") + untested
    digits = decimals(stat.mean, 3)
    if lead.significant:
        return (
            f"best held-out {metric}: {value}"
            + (f" ({gain})" if gain else "")
            + f", ahead of {runner_up.method} ({difference_words(lead.comparison, digits)})"
        )
    tie = f"held-out {metric}: {best.method} and {runner_up.method} tied within noise"
    tie += f" ({difference_words(lead.comparison, digits)})"
    return tie + (f"; {best.method} {gain}" if gain and runner_up is not base else "")


def highlights(rows: Sequence[Row], certainty: GroupCertainty) -> list[str]:
    """One-line findings for a (model, task): best quality (if a test can tell), what its
    held-out examples can detect, cheapest memory, fastest training, smallest adapter."""
    metric = primary_of(rows)
    lines = [line for line in (_quality_line(rows, certainty), certainty.detectable) if line]
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
    notes: list[str]  # under the table: values without an interval, seeds against examples
    comparison: tuple[str, Table] | None  # caption and table: each method against the reference
    certainty: GroupCertainty


def summarize(groups: Groups) -> list[GroupSummary]:
    """One summary per (model, task) of :func:`~peftcore.report.rows.group_rows`, in its order."""
    summaries = []
    certainties = assess(groups)
    for (model, task), rows in groups.items():
        metric = primary_of(rows)
        certainty = certainties[(model, task)]
        summaries.append(
            GroupSummary(
                title=group_title(model, task, groups),
                note=primary_note(model, metric) if metric else None,
                rows=rows,
                columns=table_columns(rows),
                front=pareto_methods(rows, metric),
                seeds_column=seeded(rows),
                highlights=highlights(rows, certainty),
                notes=[n for n in (bare_note(certainty), certainty.noise) if n],
                comparison=comparison_table(certainty, rows),
                certainty=certainty,
            )
        )
    return summaries


def shows_intervals(summaries: Sequence[GroupSummary]) -> bool:
    """Whether any table cell carries a 95% interval (then the report says what the ± means)."""
    return any(has_intervals(g.rows, [c.quantity for c in g.columns]) for g in summaries)
