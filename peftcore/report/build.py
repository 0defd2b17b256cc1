"""``peftcore report``: summary tables and one self-contained HTML page from stored case records.

    peftcore report                  the newest run under reports/runs
    peftcore report RUN              a run id (under --results-dir) or a run folder
    peftcore report RUN_A RUN_B      RUN_B's report, compared case by case with RUN_A

Writes ``reports/<run-id>/`` (or ``--out``): ``summary.csv`` (one row per case),
``summary.md`` (tables to paste into a README), ``report.html`` (plots embedded as PNG) and,
given two runs, ``comparison.csv``. Everything is read back from the record files
(:mod:`peftcore.results.store`), never taken from a live session. The folder is built next to its
destination and renamed into place, so a failure leaves the previous report whole.

This module reads the runs, writes the tables and publishes the folder. The rows and numbers
every output shares are :mod:`peftcore.report.rows`, the figures :mod:`peftcore.report.plots`
and the page :mod:`peftcore.report.html`. matplotlib is imported only when plots are drawn: the
CLI and the pytest plugin import this module at start-up.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError
from peftcore.gates.baseline import ComparisonResult, compare_records
from peftcore.report.html import report_html
from peftcore.report.plots import draw_plots
from peftcore.report.rows import (
    COMPARISON_LEAD,
    DASH,
    SEEDS_NOTE,
    Row,
    Stat,
    comparison_parts,
    failed_records,
    fmt_seconds,
    fmt_value,
    group_rows,
    group_title,
    highlights,
    pareto_methods,
    primary_note,
    primary_of,
    reason_line,
    run_facts,
    seeded,
    table_columns,
    unreadable,
)
from peftcore.report.rows import (
    pareto_front as pareto_front,  # re-exported: callers import it from here
)
from peftcore.results import store
from peftcore.results.quantities import Quantity, metric_names
from peftcore.results.record import case_seed, primary_metric
from peftcore.results.store import Run, RunError
from peftcore.storage import atomic_write_bytes
from peftcore.units import format_bytes

DEFAULT_RESULTS = Path("reports/runs")
DEFAULT_REPORTS = Path("reports")
MARKER = ".peftcore-report"  # only a folder carrying it is ever replaced


class ReportError(PeftcoreError):
    """A report cannot be built: no such run, nothing readable, or the output is not ours."""


# --------------------------------------------------------------------------- runs


def resolve_run(name: str | Path, results_dir: Path = DEFAULT_RESULTS) -> Path:
    """A run id under ``results_dir`` or a path to a run folder; ReportError when neither."""
    try:
        return store.resolve_run(name, results_dir)
    except RunError as err:
        raise ReportError(str(err)) from None


def newest_run(results_dir: Path = DEFAULT_RESULTS) -> Path:
    try:
        return store.newest_run(results_dir)
    except RunError as err:
        raise ReportError(str(err)) from None


def read_run(run_dir: Path) -> Run:
    """The usable records of a run; unreadable record files are kept as problems, not fatal."""
    try:
        return store.read_run(run_dir)
    except RunError as err:
        raise ReportError(str(err)) from None


# --------------------------------------------------------------------------- csv


_FIXED = (
    "run_id",
    "case_id",
    "method",
    "model",
    "task",
    "seed",
    "status",
    "reason",
    "profile",
    "primary_metric",
)


def summary_csv(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per case: identity, status, every metric (held_out.*, seen.*) and every cost."""
    columns: dict[str, None] = dict.fromkeys(_FIXED)
    for split in ("held_out", "seen"):
        for record in records:
            for name in metric_names(record, split):
                columns.setdefault(f"{split}.{name}")
    for block in ("training", "inference", "base_model"):
        for record in records:
            for name, value in (record.get(block) or {}).items():
                if not isinstance(value, (list, dict)):
                    columns.setdefault(f"{block}.{name}")
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for record in records:
        row: dict[str, Any] = {k: record.get(k) for k in _FIXED}
        row["seed"] = case_seed(record)
        row["primary_metric"] = primary_metric(record)
        for name in columns:
            block, _, key = name.partition(".")
            if block in ("held_out", "seen"):
                row[name] = ((record.get("metrics") or {}).get(block) or {}).get(key)
            elif key:
                row[name] = (record.get(block) or {}).get(key)
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return out.getvalue()


def comparison_csv(result: ComparisonResult, reference: Run, current: Run) -> str:
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


def _method_label(row: Row, front: Sequence[str]) -> str:
    return row.method + (" ◆" if row.method in front else "")


def summary_md(run: Run, reference: Run | None = None, comparison: ComparisonResult | None = None) -> str:
    groups = group_rows(run.records)
    lines = [f"# peftcore report: {run.run_id}", ""]
    lines.extend(f"- **{name}:** {value}" for name, value in run_facts(run))
    lines.append("")
    if seeded(row for rows in groups.values() for row in rows):
        lines += [SEEDS_NOTE, ""]
    for (model, task), rows in groups.items():
        metric = primary_of(rows)
        front = pareto_methods(rows, metric)
        lines.append(f"## {group_title(model, task, groups)}")
        lines.append("")
        if metric:
            lines.append(primary_note(model, metric))
            lines.append("")
        columns = table_columns(rows)
        show_seeds = seeded(rows)
        header = ["Method", *(["Seeds"] if show_seeds else []), *(c.header for c in columns)]
        body = [
            [
                _method_label(r, front),
                *([str(len(r.records))] if show_seeds else []),
                *(c.render(r) for c in columns),
            ]
            for r in rows
        ]
        lines.extend(_md_table(header, body, [False] + [True] * (len(header) - 1)))
        lines.append("")
        notes = highlights(rows)
        if front:
            notes.append(
                "◆ marks the methods on that front (no other method has both less memory and better quality)"
            )
        lines.extend(f"- {note}" for note in notes)
        lines.append("")
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
    problems = unreadable(run, reference)
    if problems:
        lines += ["## Record files that could not be read", ""]
        lines.extend(f"- {_md(p)}" for p in problems)
        lines.append("")
    if reference is not None and comparison is not None:
        lines.extend(_comparison_md(reference, run, comparison))
    return "\n".join(lines).rstrip() + "\n"


def _comparison_md(reference: Run, current: Run, result: ComparisonResult) -> list[str]:
    facts, headline, detail = comparison_parts(reference, current, result)
    lines = [f"## Comparison with {reference.run_id}", ""]
    lines += [COMPARISON_LEAD.format(new=current.run_id, old=reference.run_id), ""]
    lines += [f"- {fact}" for fact in facts] + ["", "### Per case", ""]
    lines += _md_table(headline.header, headline.rows, headline.right)
    lines += ["", "### Every value that changed", ""]
    lines += _md_table(detail.header, detail.rows, detail.right) if detail.rows else ["Nothing changed."]
    return [*lines, ""]


# --------------------------------------------------------------------------- writing


@dataclass(frozen=True)
class Written:
    out_dir: Path
    run: Run
    reference: Run | None
    comparison: ComparisonResult | None
    files: tuple[str, ...]


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Written:
    """Read the runs, render every file in memory, then publish the folder in one rename."""
    if not 1 <= len(run_dirs) <= 2:
        raise ReportError(f"give one run, or two to compare (reference, then new); got {len(run_dirs)}")
    runs = [read_run(Path(d)) for d in run_dirs]
    run, reference = runs[-1], (runs[0] if len(runs) == 2 else None)
    comparison = None
    if reference is not None:
        comparison = compare_records(run.records, reference.records)
        if not comparison.matched_cases:
            raise ReportError(
                f"runs {reference.run_id} and {run.run_id} have no case in common (same method, model, task "
                "and seed), so there is nothing to compare"
            )
    files = {
        "summary.csv": summary_csv(run.records),
        "summary.md": summary_md(run, reference, comparison),
        "report.html": report_html(run, draw_plots(run), reference, comparison),
    }
    if reference is not None and comparison is not None:
        files["comparison.csv"] = comparison_csv(comparison, reference, run)
    out = Path(out_dir)
    publish_dir(out, {name: text.encode("utf-8") for name, text in files.items()})
    return Written(out, run, reference, comparison, tuple(files))


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Build the report of ``run_dirs`` (one run, or reference then new) into ``out_dir``."""
    return build_report(run_dirs, out_dir).out_dir


def publish_dir(out_dir: Path, files: Mapping[str, bytes]) -> None:
    """Replace ``out_dir`` with a folder holding ``files``, all at once.

    The new folder is written (and fsynced) next to the destination, the old one renamed away,
    the new one renamed in, and the old one deleted. Only an empty folder or one that carries
    the report marker is ever replaced, so ``--out`` cannot wipe a run or a source folder.
    """
    parent = out_dir.parent
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ReportError(f"{out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ReportError(f"refusing to replace {out_dir}: it is not a peftcore report folder (no {MARKER})")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".new", dir=parent))
    except OSError as err:
        raise ReportError(f"cannot write a report next to {out_dir}: {err.strerror}") from None
    old: Path | None = None
    try:
        for name, data in {
            **files,
            MARKER: b"written by peftcore report; the folder is replaced as a whole\n",
        }.items():
            atomic_write_bytes(tmp / name, data)
            os.chmod(tmp / name, 0o644)  # temp files are created private; a report is meant to be read
        os.chmod(tmp, 0o755)
        if out_dir.exists():
            old = parent / f".{out_dir.name}.{uuid.uuid4().hex[:8]}.old"
            os.rename(out_dir, old)
        try:
            os.rename(tmp, out_dir)
        except OSError:
            if old is not None:
                os.rename(old, out_dir)
                old = None
            raise
        _fsync_dir(parent)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise ReportError(f"could not write the report {out_dir}: {err.strerror or err}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- terminal


def compact_table(records: Iterable[Mapping[str, Any]]) -> str:
    """A short plain-text table for a terminal: case, status, train time, peak memory, primary metric.

    One line per record, in the order given (seeds are not merged); a case that did not finish
    shows its reason in the last column.
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


# --------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="a run id under --results-dir or a run folder (default: the newest run); with two runs, "
        "the report is of the second, compared case by case with the first",
    )
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=DEFAULT_RESULTS,
        help="where runs are looked up (default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: reports/<run-id> or reports/<new>-vs-<old>)",
    )


def default_out(run_dirs: Sequence[Path]) -> Path:
    names = [Path(d).name for d in run_dirs]
    return DEFAULT_REPORTS / (names[-1] if len(names) == 1 else f"{names[-1]}-vs-{names[0]}")


def run(args: argparse.Namespace) -> int:
    if len(args.runs) > 2:
        raise ReportError(f"give one run, or two to compare (reference, then new); got {len(args.runs)}")
    run_dirs = [resolve_run(r, args.results_dir) for r in args.runs] or [newest_run(args.results_dir)]
    written = build_report(run_dirs, args.out or default_out(run_dirs))
    records = written.run.records
    failed = sum(r["status"] != "finished" for r in records)
    print(
        f"wrote {written.out_dir}/: {', '.join(written.files)} "
        f"({len(records)} cases of {written.run.run_id}: {len(records) - failed} finished, {failed} not)"
    )
    if written.comparison is not None and written.reference is not None:
        c = written.comparison
        print(
            f"compared with {written.reference.run_id}: {len(c.matched_cases)} cases in both, "
            f"{len(c.new_cases)} only in {written.run.run_id}, "
            f"{len(c.missing_cases)} only in {written.reference.run_id}"
        )
    for run_ in (written.reference, written.run):
        if run_ is not None and run_.problems:
            print(
                f"warning: {len(run_.problems)} record file(s) of {run_.run_id} could not be read:",
                file=sys.stderr,
            )
            for problem in run_.problems:
                print(f"  {problem}", file=sys.stderr)
    return 0
