"""What the comparison of two runs says: its facts, one headline row per case, every changed value.

The cases are matched and the values judged by :func:`peftcore.gates.baseline.compare_records`;
this module only words the result, once, for both the Markdown (:mod:`peftcore.report.tables`)
and the page (:mod:`peftcore.report.html`). ▲ and ▼ in a cell mark a better or worse value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from peftcore.gates.baseline import ComparisonResult, ComparisonRow
from peftcore.report.formats import DASH, fmt_count, fmt_seconds
from peftcore.report.rows import Stat
from peftcore.results.store import Run
from peftcore.units import format_bytes
from peftcore.vocab.record import primary_metric

COMPARISON_LEAD = (
    "{new} against {old}, case by case (matched on method, model, task and seed). ▲ better, ▼ worse, by "
    "each metric's declared direction; comparison.csv holds every value."
)

_ARROW = {"better": "▲ better", "worse": "▼ worse", "same": "= same", "changed": "≠ changed"}
_MARK = {"better": " ▲", "worse": " ▼"}


@dataclass(frozen=True)
class Table:
    """A table as text cells, ready for Markdown or HTML."""

    header: list[str]
    rows: list[list[str]]
    right: list[bool]  # right-aligned (numeric) columns


def _format_quantity(label: str, value: float) -> str:
    name = label.rpartition(".")[2]
    if name.endswith("_bytes"):
        return format_bytes(value)
    if name.endswith("_seconds"):
        return fmt_seconds(Stat(value, None, 1))
    if name.endswith("_params") or name in ("train_tokens", "steps"):
        return fmt_count(value)
    return "NaN" if math.isnan(value) else f"{value:.4g}"


def _change(row: ComparisonRow) -> str:
    if row.delta == 0:
        return "±0"
    name = row.quantity.rpartition(".")[2]
    if name.endswith("_bytes"):
        text = ("+" if row.delta >= 0 else "-") + format_bytes(abs(row.delta))
    else:
        text = f"{row.delta:+.4g}"
    if row.relative is not None and math.isfinite(row.relative):
        text += f" ({row.relative:+.1%})"
    return text


def _relative(row: ComparisonRow | None) -> str:
    if row is None:
        return DASH
    if row.delta == 0:
        return "±0"
    arrow = _MARK.get(row.verdict, "")
    if row.relative is None or not math.isfinite(row.relative):
        return f"{row.delta:+.4g}{arrow}"
    return f"{row.relative:+.1%}{arrow}"


def _facts(reference: Run, current: Run, result: ComparisonResult) -> list[str]:
    counts = {v: sum(r.verdict == v for r in result.rows) for v in ("better", "worse", "same", "changed")}
    return [
        f"cases in both: {len(result.matched_cases)}",
        f"only in {current.run_id}: {', '.join(result.new_cases) or 'none'}",
        f"only in {reference.run_id}: {', '.join(result.missing_cases) or 'none'}",
        *(f"not compared: {case}: {why}" for case, why in result.unavailable),
        *(f"note: {note}" for note in result.notes),
        f"{counts['better']} values better, {counts['worse']} worse, {counts['same']} unchanged"
        + (f", {counts['changed']} changed (no direction)" if counts["changed"] else ""),
    ]


def _headline(reference: Run, current: Run, result: ComparisonResult) -> Table:
    """One row per case: its primary metric before and after, and how memory and time moved."""
    primary = {str(r["case_id"]): primary_metric(r) for r in current.records}
    by_case: dict[str, dict[str, ComparisonRow]] = {}
    for row in result.rows:
        by_case.setdefault(row.case_id, {})[row.quantity] = row
    table = Table(
        ["Case", "Metric", reference.run_id, current.run_id, "Change", "Peak train memory", "Train time"],
        [],
        [False, False, True, True, True, True, True],
    )
    for case_id, rows in by_case.items():
        metric = primary.get(case_id) or ""
        main = rows.get(metric)
        table.rows.append(
            [
                case_id,
                metric or DASH,
                _format_quantity(metric, main.baseline) if main else DASH,
                _format_quantity(metric, main.current) if main else DASH,
                (_change(main) + _MARK.get(main.verdict, "")) if main else DASH,
                _relative(rows.get("training.peak_memory_bytes")),
                _relative(rows.get("training.train_seconds")),
            ]
        )
    return table


def _detail(reference: Run, current: Run, result: ComparisonResult) -> Table:
    """Every value that changed (unchanged ones are left to comparison.csv)."""
    return Table(
        ["Case", "Quantity", reference.run_id, current.run_id, "Change", "Verdict"],
        [
            [
                r.case_id,
                r.quantity,
                _format_quantity(r.quantity, r.baseline),
                _format_quantity(r.quantity, r.current),
                _change(r),
                _ARROW.get(r.verdict, r.verdict),
            ]
            for r in result.rows
            if r.verdict != "same"
        ],
        [False, False, True, True, True, False],
    )


def comparison_parts(
    reference: Run, current: Run, result: ComparisonResult
) -> tuple[list[str], Table, Table]:
    """What the comparison section says: facts, one headline row per case, every changed quantity."""
    return (
        _facts(reference, current, result),
        _headline(reference, current, result),
        _detail(reference, current, result),
    )
