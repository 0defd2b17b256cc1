"""The report's text tables: summary.csv, comparison.csv, summary.md and the terminal table.

Each function takes records (or a read :class:`~peftcore.results.store.Run`) and returns the
file's text; nothing here writes a file. The CSV files hold raw numbers, one row per case
(summary.csv is the records' DataFrame); the Markdown and terminal tables hold the formatted
ones (:mod:`peftcore.report.formats`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from peftcore.gates.baseline import ComparisonResult
from peftcore.report.certainty import INTERVAL_NOTE
from peftcore.report.comparison import COMPARISON_LEAD, comparison_parts
from peftcore.report.deploy import deploy_md
from peftcore.report.facts import (
    MISSING_LEAD,
    failed_records,
    missing_cases,
    reason_line,
    run_facts,
    unreadable,
)
from peftcore.report.formats import DASH, fmt_seconds, fmt_value
from peftcore.report.off_task import off_task_md
from peftcore.report.rows import SEEDS_NOTE, Row, Stat, group_rows
from peftcore.report.summary import GroupSummary, shows_intervals, summarize
from peftcore.report.tuning import tuning_md
from peftcore.results.frame import records_frame
from peftcore.results.store import Run
from peftcore.units import format_bytes
from peftcore.vocab.quantities import Quantity
from peftcore.vocab.record import primary_metric

# --------------------------------------------------------------------------- csv


def summary_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per case: the records' DataFrame (:func:`peftcore.results.frame.records_frame`):
    identity, status, every metric, every cost figure with its unit, provenance and the
    resolved spec. A value a record does not carry (a failed case, the base model's training)
    is an empty cell, never zero; lists (the loss curve) are left out."""
    return str(records_frame(records).to_csv(index=False, lineterminator="\n"))


def comparison_csv(result: ComparisonResult, reference: Run, current: Run) -> str:
    """Every compared value of every case in both runs, then one line per case not compared."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [
        *("case_id", "method", "model", "task", "seed", "quantity", reference.run_id, current.run_id),
        *("delta", "relative_delta", "higher_is_better", "verdict"),
    ]
    writer.writerow(header)
    for row in result.rows:
        method, model, task, seed = row.key
        relative = "" if row.relative is None else row.relative
        direction = "" if row.higher_is_better is None else row.higher_is_better
        writer.writerow(
            [
                *(row.case_id, method, model, task, seed, row.quantity, row.baseline, row.current),
                *(row.delta, relative, direction, row.verdict),
            ]
        )
    uncompared = [
        *((case_id, f"only in {current.run_id}") for case_id in result.new_cases),
        *((case_id, f"only in {reference.run_id}") for case_id in result.missing_cases),
        *((case_id, f"not compared: {why}") for case_id, why in result.unavailable),
    ]
    for case_id, verdict in uncompared:
        writer.writerow([case_id, *[""] * (len(header) - 2), verdict])
    return out.getvalue()


# --------------------------------------------------------------------------- markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines.extend("| " + " | ".join(_md(c) for c in row) + " |" for row in rows)
    return lines


_FRONT_NOTE = "◆ marks the methods on that front (no other method has both less memory and better quality)"


def _method_label(row: Row, front: Sequence[str]) -> str:
    return row.method + (" ◆" if row.method in front else "")


def summary_md(run: Run, reference: Run | None = None, comparison: ComparisonResult | None = None) -> str:
    """summary.md: the run's facts, a table and highlights per (model, task), the failed cases,
    the unreadable record files and, given a reference run and the comparison, that section."""
    summaries = summarize(group_rows(run.records))
    lines = [f"# peftcore report: {run.run_id}", ""]
    lines.extend(f"- **{name}:** {value}" for name, value in run_facts(run))
    lines.append("")
    if any(group.seeds_column for group in summaries):
        lines += [SEEDS_NOTE, ""]
    if shows_intervals(summaries):
        lines += [INTERVAL_NOTE, ""]
    for group in summaries:
        lines.append(f"## {group.title}")
        lines.append("")
        if group.note:
            lines.append(group.note)
            lines.append("")
        header = ["Method", *(["Seeds"] if group.seeds_column else []), *(c.header for c in group.columns)]
        body = [
            [
                _method_label(r, group.front),
                *([str(len(r.records))] if group.seeds_column else []),
                *(c.render(r) for c in group.columns),
            ]
            for r in group.rows
        ]
        lines.extend(_md_table(header, body, [False] + [True] * (len(header) - 1)))
        lines.append("")
        lines.extend(line for note in group.notes for line in (note, ""))
        notes = [*group.highlights, *([_FRONT_NOTE] if group.front else [])]
        lines.extend(f"- {note}" for note in notes)
        lines.append("")
        lines.extend(_group_comparison_md(group))
    lines.extend(off_task_md(run.records))
    lines.extend(deploy_md(run.records))
    lines.extend(tuning_md(run))
    failed = failed_records(run.records)
    if failed:
        lines += ["## Failed cases", ""]
        lines.extend(
            _md_table(
                ["Case", "Status", "Reason"],
                ([str(r["case_id"]), str(r["status"]), reason_line(r)] for r in failed),
                [False, False, False],
            )
        )
        lines.append("")
    missing = missing_cases(run)
    if missing:
        lines += ["## Missing cases", "", MISSING_LEAD.format(n=len(run.grid.missing) if run.grid else 0), ""]
        lines.extend(f"- {_md(line)}" for line in missing)
        lines.append("")
    problems = unreadable(run, reference)
    if problems:
        lines += ["## Record files that could not be read", ""]
        lines.extend(f"- {_md(p)}" for p in problems)
        lines.append("")
    if reference is not None and comparison is not None:
        lines.extend(_comparison_md(reference, run, comparison))
    return "\n".join(lines).rstrip() + "\n"


def _group_comparison_md(group: GroupSummary) -> list[str]:
    """The group's paired comparisons with its reference: caption, then table."""
    if group.comparison is None:
        return []
    caption, table = group.comparison
    return [f"**Paired comparisons.** {caption}", "", *_md_table(table.header, table.rows, table.right), ""]


def _comparison_md(reference: Run, current: Run, result: ComparisonResult) -> list[str]:
    facts, headline, detail = comparison_parts(reference, current, result)
    lines = [f"## Comparison with {reference.run_id}", ""]
    lines += [COMPARISON_LEAD.format(new=current.run_id, old=reference.run_id), ""]
    lines += [f"- {fact}" for fact in facts] + ["", "### Per case", ""]
    lines += _md_table(headline.header, headline.rows, headline.right)
    lines += ["", "### Every value that changed", ""]
    lines += _md_table(detail.header, detail.rows, detail.right) if detail.rows else ["Nothing changed."]
    return [*lines, ""]


# --------------------------------------------------------------------------- terminal


def compact_table(records: Iterable[Mapping[str, Any]]) -> str:
    """A short plain-text table for a terminal: case, status, train time, peak memory, primary metric.

    One line per record, in the order given (seeds are not merged); a case that did not finish
    shows its reason in the last column. No records: ``no case records``.
    """
    rows = [("case", "status", "train time", "peak memory", "held-out (primary)")]
    for record in records:
        finished = record.get("status") == "finished"
        seconds = Quantity("training", "train_seconds").value(record)
        memory = Quantity("training", "peak_memory_bytes").value(record)
        metric = primary_metric(record)
        value = Quantity("held_out", metric).value(record) if metric else None
        if finished:
            quality = f"{metric} {fmt_value(value)}" if metric and value is not None else DASH
        else:
            quality = reason_line(record, 60)
        rows.append(
            (
                str(record["case_id"]),
                str(record.get("status")),
                fmt_seconds(Stat(seconds, None, 1)) if seconds is not None else DASH,
                format_bytes(memory) if memory is not None else DASH,
                quality,
            )
        )
    if len(rows) == 1:
        return "no case records"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
