"""``peftcore report``: summary tables and one self-contained HTML page from stored case records.

    peftcore report                  the newest run under reports/runs
    peftcore report RUN              a run id (under --results-dir) or a run folder
    peftcore report RUN_A RUN_B      RUN_B's report, compared case by case with RUN_A

Writes ``reports/<run-id>/`` (or ``--out``): ``summary.csv`` (one row per case),
``summary.md`` (tables to paste into a README), ``report.html`` (plots embedded as PNG) and,
given two runs, ``comparison.csv``. Everything is read back from the record files
(:mod:`peftcore.results`), never taken from a live session. The folder is built next to its
destination and renamed into place, so a failure leaves the previous report whole.

matplotlib is imported only when plots are drawn: the CLI and the pytest plugin import this
module at start-up.
"""

from __future__ import annotations

import argparse
import base64
import csv
import html
import io
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError
from peftcore.gates import (
    ComparisonResult,
    ComparisonRow,
    Quantity,
    case_seed,
    compare_records,
    human_bytes,
    primary_metric,
    task_metrics,
)
from peftcore.metrics import higher_is_better
from peftcore.results import atomic_write_bytes, load_run

DEFAULT_RESULTS = Path("reports/runs")
DEFAULT_REPORTS = Path("reports")
MARKER = ".peftcore-report"  # only a folder carrying it is ever replaced
DASH = "—"


class ReportError(PeftcoreError):
    """A report cannot be built: no such run, nothing readable, or the output is not ours."""


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    run_dir: Path
    records: tuple[dict[str, Any], ...]
    problems: tuple[str, ...]  # record files that could not be read, each "path: why"

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def resolve_run(name: str | Path, results_dir: Path = DEFAULT_RESULTS) -> Path:
    """A run id under ``results_dir`` or a path to a run folder; ReportError when neither."""
    text = str(name)
    by_id = results_dir / text
    if "/" not in text and os.sep not in text and by_id.is_dir():
        return by_id
    if Path(text).is_dir():
        return Path(text)
    known = [p.name for p in _runs(results_dir)][:5]
    hint = f" (newest there: {', '.join(known)})" if known else ""
    raise ReportError(f"no run {text!r}: neither a folder nor a run id under {results_dir}{hint}")


def newest_run(results_dir: Path = DEFAULT_RESULTS) -> Path:
    runs = _runs(results_dir)
    if not runs:
        raise ReportError(f"no runs under {results_dir}: run the benchmark first (pytest benchmarks)")
    return runs[0]


def _runs(results_dir: Path) -> list[Path]:
    """Run folders, most recently written first (a record write touches ``cases/``)."""
    if not results_dir.is_dir():
        return []
    runs = [p for p in results_dir.iterdir() if not p.name.startswith(".") and (p / "cases").is_dir()]
    return sorted(runs, key=lambda p: ((p / "cases").stat().st_mtime_ns, p.name), reverse=True)


def read_run(run_dir: Path) -> Run:
    """The usable records of a run; unreadable record files are kept as problems, not fatal."""
    if not run_dir.is_dir():
        raise ReportError(f"run folder {run_dir} does not exist")
    if not (run_dir / "cases").is_dir():
        raise ReportError(f"{run_dir} is not a run folder (it has no cases/)")
    loaded = load_run(run_dir)
    if not loaded.records:
        why = f"; {len(loaded.problems)} unreadable, first: {loaded.problems[0]}" if loaded.problems else ""
        raise ReportError(f"run {run_dir} has no readable case records{why}")
    return Run(run_dir, loaded.records, loaded.problems)


# --------------------------------------------------------------------------- grouping


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float | None  # None for a single value
    n: int


def _stat(values: Iterable[float | None]) -> Stat | None:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if any(math.isnan(v) for v in present):
        return Stat(math.nan, None, len(present))
    std = statistics.stdev(present) if len(present) > 1 else None
    return Stat(statistics.fmean(present), std, len(present))


@dataclass
class Row:
    """One (model, task, method): its finished records, one per seed."""

    model: str
    task: str
    method: str
    records: list[dict[str, Any]] = field(default_factory=list)

    def stat(self, quantity: Quantity) -> Stat | None:
        return _stat(quantity.value(r) for r in self.records)

    @property
    def tuner(self) -> str:
        return str(((self.records[0].get("spec") or {}).get("method") or {}).get("tuner", ""))

    @property
    def trains(self) -> bool:
        return self.tuner != "none" and self.records[0].get("training") is not None

    @property
    def seeds(self) -> list[int]:
        return sorted(case_seed(r) for r in self.records)


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _method_order(row: Row) -> tuple[Any, ...]:
    """The untrained base first, then full fine-tuning, then the PEFT methods by name."""
    rank = 0 if row.tuner == "none" else 1 if row.tuner == "full" else 2
    return (rank, _natural(row.method))


def group_rows(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Row]]:
    """Finished records by (model, task), then by method (seeds together), in reading order."""
    rows: dict[tuple[str, str, str], Row] = {}
    for record in records:
        if record.get("status") == "finished":
            key = (str(record["model"]), str(record["task"]), str(record["method"]))
            rows.setdefault(key, Row(*key)).records.append(dict(record))
    groups: dict[tuple[str, str], list[Row]] = {}
    for (model, task, _), row in sorted(
        rows.items(), key=lambda kv: (_natural(kv[0][0]), _natural(kv[0][1]))
    ):
        groups.setdefault((model, task), []).append(row)
    return {key: sorted(group, key=_method_order) for key, group in groups.items()}


def _metrics_of(rows: Sequence[Row]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for record in row.records:
            for name in (*task_metrics(record), *((record.get("metrics") or {}).get("held_out") or {})):
                names.setdefault(name)
    return list(names)


def _primary(rows: Sequence[Row]) -> str | None:
    for row in rows:
        name = primary_metric(row.records[0])
        if name:
            return name
    return None


def pareto_front(points: Sequence[tuple[str, float, float]], higher_better: bool) -> list[str]:
    """Names of the points no other point beats on both cost (lower) and quality.

    >>> pareto_front([("a", 1.0, 0.5), ("b", 2.0, 0.6), ("c", 2.5, 0.55)], True)
    ['a', 'b']
    """
    usable = [(n, c, q) for n, c, q in points if not (math.isnan(c) or math.isnan(q))]

    def beats(other: tuple[str, float, float], point: tuple[str, float, float]) -> bool:
        _, c2, q2 = other
        _, c1, q1 = point
        no_worse = c2 <= c1 and (q2 >= q1 if higher_better else q2 <= q1)
        return no_worse and (c2 < c1 or q2 != q1)

    front = [p for p in usable if not any(beats(o, p) for o in usable if o is not p)]
    return [n for n, _, _ in sorted(front, key=lambda p: p[1])]


def _front_of(rows: Sequence[Row], metric: str | None) -> list[str]:
    direction = higher_is_better(metric) if metric else None
    if metric is None or direction is None:
        return []
    memory, quality = Quantity("training", "peak_memory_bytes"), Quantity("held_out", metric)
    points = []
    for row in rows:
        cost, value = row.stat(memory), row.stat(quality)
        if row.trains and cost and value:
            points.append((row.method, cost.mean, value.mean))
    return pareto_front(points, direction)


# --------------------------------------------------------------------------- formatting


def _num(value: float) -> str:
    """A metric value: 0.480, 31.07, 412.5."""
    return "NaN" if math.isnan(value) else f"{value:.{_decimals(value, 3)}f}"


def _scaled(value: float, units: Sequence[tuple[str, float]]) -> tuple[str, float]:
    unit, scale = units[0]
    for name, size in units:
        if abs(value) >= size:
            unit, scale = name, size
    return unit, scale


_BYTE_UNITS = [("B", 1.0), ("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40)]
_COUNT_UNITS = [("", 1.0), ("K", 1e3), ("M", 1e6), ("B", 1e9)]


def _decimals(value: float, base: int) -> int:
    """Decimals for about ``base + 1`` significant digits: 0.480, 31.07, 513."""
    size = abs(value)
    return max(0, base - (2 if size >= 100 else 1 if size >= 10 else 0))


def _pm(mean: float, std: float | None, *, base: int, scale: float = 1.0, unit: str = "") -> str:
    """``1.18 ± 0.01 GiB``: the deviation gets the mean's decimals and is left out when it rounds to 0."""
    if math.isnan(mean):
        return "NaN"
    digits = _decimals(mean / scale, base)
    text = f"{mean / scale:.{digits}f}"
    if std is not None and round(std / scale, digits) != 0:
        text += f" ± {std / scale:.{digits}f}"
    return text + (f" {unit}" if unit else "")


def fmt_bytes(stat: Stat) -> str:
    unit, scale = _scaled(stat.mean, _BYTE_UNITS)
    return _pm(stat.mean, stat.std, base=0 if unit == "B" else 2, scale=scale, unit=unit)


def fmt_seconds(stat: Stat) -> str:
    mean = stat.mean
    if stat.std is not None:
        unit, scale = ("s", 1.0) if mean < 120 else ("min", 60.0) if mean < 7200 else ("h", 3600.0)
        return _pm(mean, stat.std, base=2, scale=scale, unit=unit)
    if mean < 60:
        return f"{mean:.1f} s"
    if mean < 3600:
        minutes, seconds = divmod(round(mean), 60)
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(round(mean / 60), 60)
    return f"{hours} h {minutes:02d} min"


def fmt_count(value: float) -> str:
    unit, scale = _scaled(value, _COUNT_UNITS)
    return f"{value:,.0f}" if not unit else f"{value / scale:.1f} {unit}"


def fmt_percent(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}%"
    return f"{value:.2g}%" if value > 0 else "0%"


def fmt_metric(stat: Stat) -> str:
    return _pm(stat.mean, stat.std, base=3)


def fmt_ms(stat: Stat) -> str:
    return _pm(stat.mean, stat.std, base=2, unit="ms")


@dataclass(frozen=True)
class Column:
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
        _column("Adapter size", Quantity("training", "adapter_bytes"), fmt_bytes),
        Column("Trainable params", Quantity("training", "trainable_params"), _params_cell),
    ]
    for metric in _metrics_of(rows):
        columns.append(_column(f"Held-out {metric}", Quantity("held_out", metric), fmt_metric))
        columns.append(_column(f"Seen {metric}", Quantity("seen", metric), fmt_metric))
    columns.append(_column("Latency", Quantity("inference", "latency_ms_per_example"), fmt_ms))
    columns.append(_column("Inference memory", Quantity("inference", "peak_memory_bytes"), fmt_bytes))
    return columns


def _best(rows: Sequence[Row], quantity: Quantity) -> str | None:
    direction = higher_is_better(quantity.name)
    scored = [(s.mean, r.method) for r in rows if (s := r.stat(quantity)) and not math.isnan(s.mean)]
    if direction is None or len(scored) < 2:
        return None
    return (max(scored) if direction else min(scored))[1]


def highlights(rows: Sequence[Row]) -> list[str]:
    """One-line findings for a (model, task): best quality, cheapest memory, smallest adapter."""
    metric = _primary(rows)
    lines = []
    if metric:
        quality = Quantity("held_out", metric)
        best = _best(rows, quality)
        base = next((r for r in rows if not r.trains), None)
        if best:
            row = next(r for r in rows if r.method == best)
            stat = row.stat(quality)
            assert stat is not None
            gain = ""
            base_stat = base.stat(quality) if base and base is not row else None
            if base_stat and not math.isnan(base_stat.mean):
                delta = stat.mean - base_stat.mean
                gain = f" ({delta:+.{_decimals(stat.mean, 3)}f} vs {base.method if base else ''})"
            lines.append(f"best held-out {metric}: {best} {_num(stat.mean)}{gain}")
    trained = [r for r in rows if r.trains]
    for name, words, fmt in (
        ("peak_memory_bytes", "lowest peak training memory", fmt_bytes),
        ("train_seconds", "fastest training", fmt_seconds),
        ("adapter_bytes", "smallest adapter", fmt_bytes),
    ):
        quantity = Quantity("training", name)
        best = _best(trained, quantity)
        if best:
            stat = next(r for r in trained if r.method == best).stat(quantity)
            assert stat is not None
            lines.append(f"{words}: {best} {fmt(Stat(stat.mean, None, 1))}")
    front = _front_of(rows, metric)
    if front:
        lines.append(f"quality/memory Pareto front: {', '.join(front)}")
    return lines


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
            for name in (*task_metrics(record), *((record.get("metrics") or {}).get(split) or {})):
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
    writer.writerow(
        [
            *("case_id", "method", "model", "task", "seed", "quantity", reference.run_id, current.run_id),
            *("delta", "relative_delta", "higher_is_better", "verdict"),
        ]
    )
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
    for case_id in result.new_cases:
        writer.writerow([case_id, "", "", "", "", "", "", "", "", "", "", f"only in {current.run_id}"])
    for case_id in result.missing_cases:
        writer.writerow([case_id, "", "", "", "", "", "", "", "", "", "", f"only in {reference.run_id}"])
    for case_id, why in result.unavailable:
        writer.writerow([case_id, "", "", "", "", "", "", "", "", "", "", f"not compared: {why}"])
    return out.getvalue()


# --------------------------------------------------------------------------- run facts


def _distinct(values: Iterable[Any]) -> str:
    seen: dict[str, None] = {}
    for value in values:
        if value is not None and value != "":
            seen.setdefault(str(value))
    return " / ".join(seen) if seen else DASH


def run_facts(run: Run) -> list[tuple[str, str]]:
    """What a reader needs to trust the numbers: profile, budget, data sizes, versions, commit."""
    records = run.records
    spec = [r.get("spec") or {} for r in records]
    prov = [r.get("provenance") or {} for r in records]
    finished = sum(r["status"] == "finished" for r in records)
    budget = [s.get("training") or {} for s in spec]
    data = [s.get("data") or {} for s in spec]
    versions: dict[str, str] = {}
    for p in prov:
        for name, version in (p.get("versions") or {}).items():
            versions.setdefault(str(name), str(version))
    commit = _distinct(
        f"{str(p.get('git_commit'))[:10]}{' (dirty)' if p.get('git_dirty') else ''}"
        for p in prov
        if p.get("git_commit")
    )
    times = sorted(str(t) for p in prov for t in (p.get("started_at"), p.get("finished_at")) if t)
    facts = [
        ("Run", run.run_id),
        ("Profile", _distinct(r.get("profile") for r in records)),
        ("Cases", f"{len(records)} ({finished} finished, {len(records) - finished} not)"),
        ("Models", _distinct(r["model"] for r in records)),
        ("Device", _distinct(p.get("device") for p in prov)),
        (
            "Training budget",
            f"{_distinct(b.get('max_steps') for b in budget)} steps"
            f" × batch {_distinct(b.get('batch_size') for b in budget)}"
            f", max length {_distinct(b.get('max_length') for b in budget)}"
            f", learning rate {_distinct(b.get('learning_rate') for b in budget)}",
        ),
        (
            "Examples",
            f"train {_distinct(d.get('train') for d in data)}"
            f", held-out {_distinct(d.get('held_out') for d in data)}"
            f", seen {_distinct(d.get('seen') for d in data)} (seen: a sample of train)",
        ),
        ("Seeds", _distinct(sorted({case_seed(r) for r in records}))),
        ("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or DASH),
        ("Git commit", commit),
        ("Time", f"{times[0]} → {times[-1]}" if times else DASH),
    ]
    return facts


def _problems(run: Run, reference: Run | None) -> list[str]:
    """Unreadable record files of the reported run and of the run it is compared with."""
    return [*run.problems, *(reference.problems if reference is not None else ())]


def failed_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((r for r in records if r["status"] != "finished"), key=lambda r: str(r["case_id"]))


def _reason(record: Mapping[str, Any], limit: int = 240) -> str:
    text = str(record.get("reason") or "no reason recorded").strip()
    first = text.splitlines()[0] if text else text
    return first if len(first) <= limit else first[: limit - 1] + "…"


# --------------------------------------------------------------------------- markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Iterable[Sequence[str]], right: Sequence[bool]) -> list[str]:
    lines = ["| " + " | ".join(_md(h) for h in header) + " |"]
    lines.append("|" + "|".join("---:" if r else "---" for r in right) + "|")
    lines.extend("| " + " | ".join(_md(c) for c in row) + " |" for row in rows)
    return lines


def _group_title(model: str, task: str, groups: Mapping[tuple[str, str], Any]) -> str:
    several_models = len({m for m, _ in groups}) > 1
    return f"{task} · {model}" if several_models else task


def _method_label(row: Row, front: Sequence[str]) -> str:
    return row.method + (" ◆" if row.method in front else "")


def summary_md(run: Run, reference: Run | None = None, comparison: ComparisonResult | None = None) -> str:
    groups = group_rows(run.records)
    lines = [f"# peftcore report: {run.run_id}", ""]
    lines.extend(f"- **{name}:** {value}" for name, value in run_facts(run))
    lines.append("")
    if any(len(row.records) > 1 for rows in groups.values() for row in rows):
        lines += ["Values are mean ± standard deviation over the seeds of each row.", ""]
    for (model, task), rows in groups.items():
        metric = _primary(rows)
        direction = higher_is_better(metric) if metric else None
        front = _front_of(rows, metric)
        lines.append(f"## {_group_title(model, task, groups)}")
        lines.append("")
        if metric:
            better = {True: "higher is better", False: "lower is better", None: "direction unknown"}[
                direction
            ]
            lines.append(f"Model {model}; primary metric: held-out {metric} ({better}).")
            lines.append("")
        columns = table_columns(rows)
        show_seeds = any(len(r.records) > 1 for r in rows)
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
                ([str(r["case_id"]), str(r["status"]), _reason(r)] for r in failed),
                [False, False, False],
            )
        )
        lines.append("")
    problems = _problems(run, reference)
    if problems:
        lines += ["## Record files that could not be read", ""]
        lines.extend(f"- {_md(p)}" for p in problems)
        lines.append("")
    if reference is not None and comparison is not None:
        lines.extend(_comparison_md(reference, run, comparison))
    return "\n".join(lines).rstrip() + "\n"


_ARROW = {"better": "▲ better", "worse": "▼ worse", "same": "= same", "changed": "≠ changed"}


def _format_quantity(label: str, value: float) -> str:
    name = label.rpartition(".")[2]
    if name.endswith("_bytes"):
        return human_bytes(value)
    if name == "train_seconds" or name.endswith("_seconds"):
        return fmt_seconds(Stat(value, None, 1))
    if name.endswith("_params") or name in ("train_tokens", "steps"):
        return fmt_count(value)
    return "NaN" if math.isnan(value) else f"{value:.4g}"


def _change(row: ComparisonRow) -> str:
    if row.delta == 0:
        return "±0"
    name = row.quantity.rpartition(".")[2]
    if name.endswith("_bytes"):
        text = ("+" if row.delta >= 0 else "-") + human_bytes(abs(row.delta))
    else:
        text = f"{row.delta:+.4g}"
    if row.relative is not None and math.isfinite(row.relative):
        text += f" ({row.relative:+.1%})"
    return text


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    right: list[bool]  # right-aligned (numeric) columns


def _relative(row: ComparisonRow | None) -> str:
    if row is None:
        return DASH
    if row.delta == 0:
        return "±0"
    arrow = {"better": " ▲", "worse": " ▼"}.get(row.verdict, "")
    if row.relative is None or not math.isfinite(row.relative):
        return f"{row.delta:+.4g}{arrow}"
    return f"{row.relative:+.1%}{arrow}"


def comparison_parts(
    reference: Run, current: Run, result: ComparisonResult
) -> tuple[list[str], Table, Table]:
    """What the comparison section says: facts, one headline row per case, every changed quantity."""
    counts = {v: sum(r.verdict == v for r in result.rows) for v in ("better", "worse", "same", "changed")}
    facts = [
        f"cases in both: {len(result.matched_cases)}",
        f"only in {current.run_id}: {', '.join(result.new_cases) or 'none'}",
        f"only in {reference.run_id}: {', '.join(result.missing_cases) or 'none'}",
        *(f"not compared: {case}: {why}" for case, why in result.unavailable),
        *(f"note: {note}" for note in result.notes),
        f"{counts['better']} values better, {counts['worse']} worse, {counts['same']} unchanged"
        + (f", {counts['changed']} changed (no direction)" if counts["changed"] else ""),
    ]
    primary = {str(r["case_id"]): primary_metric(r) for r in current.records}
    by_case: dict[str, dict[str, ComparisonRow]] = {}
    for row in result.rows:
        by_case.setdefault(row.case_id, {})[row.quantity] = row
    headline = Table(
        ["Case", "Metric", reference.run_id, current.run_id, "Change", "Peak train memory", "Train time"],
        [],
        [False, False, True, True, True, True, True],
    )
    for case_id, rows in by_case.items():
        metric = primary.get(case_id) or ""
        main = rows.get(metric)
        headline.rows.append(
            [
                case_id,
                metric or DASH,
                _format_quantity(metric, main.baseline) if main else DASH,
                _format_quantity(metric, main.current) if main else DASH,
                (_change(main) + {"better": " ▲", "worse": " ▼"}.get(main.verdict, "")) if main else DASH,
                _relative(rows.get("training.peak_memory_bytes")),
                _relative(rows.get("training.train_seconds")),
            ]
        )
    detail = Table(
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
    return facts, headline, detail


_COMPARISON_LEAD = (
    "{new} against {old}, case by case (matched on method, model, task and seed). ▲ better, ▼ worse, by "
    "each metric's declared direction; comparison.csv holds every value."
)


def _comparison_md(reference: Run, current: Run, result: ComparisonResult) -> list[str]:
    facts, headline, detail = comparison_parts(reference, current, result)
    lines = [f"## Comparison with {reference.run_id}", ""]
    lines += [_COMPARISON_LEAD.format(new=current.run_id, old=reference.run_id), ""]
    lines += [f"- {fact}" for fact in facts] + ["", "### Per case", ""]
    lines += _md_table(headline.header, headline.rows, headline.right)
    lines += ["", "### Every value that changed", ""]
    lines += _md_table(detail.header, detail.rows, detail.right) if detail.rows else ["Nothing changed."]
    return [*lines, ""]


# --------------------------------------------------------------------------- plots

_DPI = 110
_BASE_COLOR = "#8c8c8c"


@dataclass(frozen=True)
class Plot:
    id: str
    alt: str
    png: bytes


def _palette(methods: Iterable[str]) -> dict[str, str]:
    from matplotlib import colormaps

    names = list(dict.fromkeys(methods))
    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    colors = [cmap(i % cmap.N) for i in range(len(names))]
    return {name: _hex(color) for name, color in zip(names, colors, strict=True)}


def _hex(color: Sequence[float]) -> str:
    return "#" + "".join(f"{round(c * 255):02x}" for c in color[:3])


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, facecolor="white")
    return buffer.getvalue()


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig


def _style(ax: Any) -> None:
    ax.grid(True, color="#e5e5e5", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _memory_scale(values: Iterable[float]) -> tuple[str, float]:
    top = max(values, default=0.0)
    return ("GiB", 2.0**30) if top >= 2**30 else ("MiB", 2.0**20)


def plot_pareto(
    model: str, task: str, rows: Sequence[Row], colors: Mapping[str, str], title: str
) -> Plot | None:
    metric = _primary(rows)
    if metric is None:
        return None
    memory, quality = Quantity("training", "peak_memory_bytes"), Quantity("held_out", metric)
    points: list[tuple[Row, Stat, Stat]] = []
    for row in rows:
        mem, qual = row.stat(memory), row.stat(quality)
        if row.trains and mem and qual and not math.isnan(qual.mean):
            points.append((row, mem, qual))
    if not points:
        return None
    direction = higher_is_better(metric)
    unit, scale = _memory_scale(m.mean for _, m, _ in points)
    fig = _figure(7.6, 4.5)
    ax = fig.add_subplot()
    _style(ax)
    front = _front_of(rows, metric)
    if len(front) > 1:
        by_name = {r.method: (m.mean / scale, q.mean) for r, m, q in points}
        xs, ys = zip(*(by_name[name] for name in front), strict=True)
        ax.plot(xs, ys, "--", color="#333333", linewidth=1.1, zorder=1, label="Pareto front")
    for row, mem, qual in points:
        x, y = mem.mean / scale, qual.mean
        on_front = row.method in front
        ax.errorbar(
            x,
            y,
            xerr=(mem.std or 0) / scale,
            yerr=qual.std or 0,
            fmt="o",
            markersize=9 if on_front else 7,
            color=colors[row.method],
            markeredgecolor="#222222" if on_front else "white",
            markeredgewidth=1.4 if on_front else 0.8,
            capsize=3,
            zorder=3,
        )
        ax.annotate(
            row.method,
            (x, y),
            xytext=(7, 5),
            textcoords="offset points",
            fontsize=9 if on_front else 7.5,
            fontweight="bold" if on_front else "normal",
            color="#111111" if on_front else "#555555",
            zorder=4,
        )
    base = next((r for r in rows if not r.trains), None)
    base_stat = base.stat(quality) if base else None
    if base is not None and base_stat is not None and not math.isnan(base_stat.mean):
        ax.axhline(
            base_stat.mean,
            color=_BASE_COLOR,
            linestyle=":",
            linewidth=1.4,
            label=f"{base.method} (no training)",
        )
    ax.set_xlim(left=0, right=max(m.mean for _, m, _ in points) / scale * 1.18)
    better = {True: "higher is better", False: "lower is better", None: ""}[direction]
    ax.set_xlabel(f"peak training memory ({unit})")
    ax.set_ylabel(f"held-out {metric}" + (f" ({better})" if better else ""))
    ax.set_title(f"{title}: {metric} vs peak training memory", loc="left", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, frameon=False)
    slug = _slug(f"{task}-{model}")
    return Plot(f"plot-pareto-{slug}", f"{title}: held-out {metric} against peak training memory", _png(fig))


def plot_train_time(
    groups: Mapping[tuple[str, str], Sequence[Row]],
    titles: Mapping[tuple[str, str], str],
    colors: Mapping[str, str],
) -> Plot | None:
    """One bar per method (its mean over tasks), one marker per task: compact at 17 methods x 10 tasks."""
    quantity = Quantity("training", "train_seconds")
    by_method: dict[str, list[tuple[str, Stat]]] = {}
    for key, rows in groups.items():
        for row in sorted(rows, key=_method_order):
            stat = row.stat(quantity)
            if row.trains and stat is not None:
                by_method.setdefault(row.method, []).append((titles[key], stat))
    if not by_method:
        return None
    methods = sorted(by_method, key=lambda m: _method_order(_row_like(groups, m)))
    top = max(stat.mean for found in by_method.values() for _, stat in found)
    unit, scale = ("min", 60.0) if top >= 120 else ("s", 1.0)
    fig = _figure(7.6, 0.9 + 0.34 * len(methods))
    ax = fig.add_subplot()
    _style(ax)
    means = [statistics.fmean(stat.mean for _, stat in by_method[m]) / scale for m in methods]
    ax.barh(range(len(methods)), means, color=[colors[m] for m in methods], height=0.66, alpha=0.85)
    labels = list(dict.fromkeys(label for found in by_method.values() for label, _ in found))
    markers = "osD^vP*Xph"
    if len(labels) > 1:
        for i, label in enumerate(labels):
            points = [
                (stat.mean / scale, j)
                for j, m in enumerate(methods)
                for name, stat in by_method[m]
                if name == label
            ]
            xs, ys = zip(*points, strict=True)
            ax.scatter(xs, ys, marker=markers[i % len(markers)], s=18, color="#333333", zorder=3, label=label)
        ax.legend(fontsize=8, frameon=False, loc="lower right", title="task", title_fontsize=8)
    for j, (method, value) in enumerate(zip(methods, means, strict=True)):
        right = max(value, *(stat.mean / scale for _, stat in by_method[method]))  # clear of the markers
        ax.annotate(
            fmt_seconds(Stat(value * scale, None, 1)),
            (right, j),
            xytext=(8, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, top / scale * 1.3)
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set_xlabel(
        f"training time ({unit}, lower is better)" + ("; bar: mean over tasks" if len(labels) > 1 else "")
    )
    ax.set_title("Training time per method", loc="left", fontsize=11)
    return Plot("plot-train-time", "training time per method (bars) and per task (markers)", _png(fig))


def _row_like(groups: Mapping[tuple[str, str], Sequence[Row]], method: str) -> Row:
    return next(r for rows in groups.values() for r in rows if r.method == method)


def plot_adapter_size(rows: Sequence[Row], colors: Mapping[str, str]) -> Plot | None:
    quantity = Quantity("training", "adapter_bytes")
    sizes: dict[str, list[float]] = {}
    for row in sorted(rows, key=_method_order):
        for record in row.records:
            value = quantity.value(record)
            if value is not None and value > 0:
                sizes.setdefault(row.method, []).append(value)
    if not sizes:
        return None
    methods = list(sizes)
    values = [statistics.median(sizes[m]) for m in methods]
    log = max(values) / min(values) >= 50
    fig = _figure(7.6, 0.9 + 0.34 * len(methods))
    ax = fig.add_subplot()
    _style(ax)
    ax.barh(range(len(methods)), values, color=[colors[m] for m in methods], height=0.66)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 3, max(values) * 12)
    else:
        ax.set_xlim(0, max(values) * 1.3)
    for i, value in enumerate(values):
        ax.annotate(
            human_bytes(value), (value, i), xytext=(4, 0), textcoords="offset points", va="center", fontsize=9
        )
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ticks = [2.0**p for p in range(0, 50, 2) if min(values) / 3 <= 2.0**p <= max(values) * 12] if log else []
    if ticks:
        ax.set_xticks(ticks, [human_bytes(t) for t in ticks])
        ax.minorticks_off()
    else:
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: human_bytes(v)))
    ax.set_xlabel("adapter size on disk" + (" (log scale)" if log else ""))
    ax.set_title("Adapter size per method", loc="left", fontsize=11)
    return Plot("plot-adapter-size", "adapter size on disk per method", _png(fig))


def _grid(count: int, height: float = 3.1, max_cols: int = 3) -> tuple[Any, list[Any]]:
    """``count`` panels, at most ``max_cols`` a row, on a page-wide figure."""
    cols = max(1, min(max_cols, count))
    rows = math.ceil(count / cols)
    fig = _figure(13.0 if count > 1 else 7.6, height * rows + 0.5)
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(count)]
    return fig, axes


def plot_loss_curves(
    groups: Mapping[tuple[str, str], Sequence[Row]],
    titles: Mapping[tuple[str, str], str],
    colors: Mapping[str, str],
) -> Plot | None:
    panels = []
    for key, rows in groups.items():
        curves: dict[str, list[tuple[list[float], list[float]]]] = {}
        for row in rows:
            found = [c for c in (_curve(rec) for rec in row.records) if c is not None]
            if found:
                curves[row.method] = found
        if curves:
            panels.append((titles[key], curves))
    if not panels:
        return None
    fig, axes = _grid(len(panels))
    handles: dict[str, Any] = {}
    for ax, (title, curves) in zip(axes, panels, strict=True):
        _style(ax)
        for method, found in curves.items():
            steps = found[0][0]
            if len(found) > 1 and all(c[0] == steps for c in found):
                # Seeds logged at the same steps: their mean, and a band from lowest to highest.
                columns = list(zip(*(c[1] for c in found), strict=True))
                ax.fill_between(
                    steps,
                    [min(c) for c in columns],
                    [max(c) for c in columns],
                    color=colors[method],
                    alpha=0.18,
                    linewidth=0,
                )
                (line,) = ax.plot(
                    steps, [statistics.fmean(c) for c in columns], color=colors[method], linewidth=1.6
                )
            else:
                for curve_steps, losses in found:
                    (line,) = ax.plot(curve_steps, losses, color=colors[method], linewidth=1.4)
            handles.setdefault(method, line)
        ax.set_title(title, loc="left", fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("training loss")
    fig.legend(
        list(handles.values()),
        list(handles),
        loc="outside lower center",
        ncols=min(8, len(handles)),
        frameon=False,
    )
    fig.suptitle("Training loss", x=0.01, ha="left", fontsize=11)
    return Plot("plot-loss-curves", "training loss curves per task and method", _png(fig))


def _curve(record: Mapping[str, Any]) -> tuple[list[float], list[float]] | None:
    """``training.loss_curve`` as (steps, losses); None when missing or malformed."""
    curve = (record.get("training") or {}).get("loss_curve")
    if not isinstance(curve, list) or not curve:
        return None
    try:
        pairs = [(float(step), float(loss)) for step, loss in curve]
    except (TypeError, ValueError):
        return None
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_held_out_vs_seen(
    groups: Mapping[tuple[str, str], Sequence[Row]],
    titles: Mapping[tuple[str, str], str],
    colors: Mapping[str, str],
) -> Plot | None:
    panels = []
    for key, rows in groups.items():
        metric = _primary(rows)
        if metric is None:
            continue
        bars = [
            (r.method, r.stat(Quantity("seen", metric)), r.stat(Quantity("held_out", metric))) for r in rows
        ]
        bars = [(m, s, h) for m, s, h in bars if s or h]
        if bars:
            panels.append((titles[key], metric, bars))
    if not panels:
        return None
    methods = max(len(bars) for _, _, bars in panels)
    fig, axes = _grid(len(panels), height=3.3, max_cols=3 if methods <= 7 else 2 if methods <= 12 else 1)
    for ax, (title, metric, bars) in zip(axes, panels, strict=True):
        _style(ax)
        xs = range(len(bars))
        seen = [s.mean if s else 0.0 for _, s, _ in bars]
        held = [h.mean if h else 0.0 for _, _, h in bars]
        bar_colors = [colors[m] for m, _, _ in bars]
        ax.bar(
            [x - 0.2 for x in xs],
            seen,
            width=0.4,
            color=bar_colors,
            alpha=0.35,
            hatch="//",
            edgecolor="white",
        )
        ax.bar(
            [x + 0.2 for x in xs],
            held,
            width=0.4,
            color=bar_colors,
            yerr=[h.std or 0 if h else 0 for _, _, h in bars],
            capsize=2,
        )
        ax.set_xticks(list(xs), [m for m, _, _ in bars], rotation=35, ha="right", fontsize=8)
        direction = higher_is_better(metric)
        better = {True: " (higher is better)", False: " (lower is better)", None: ""}[direction]
        ax.set_ylabel(metric + better, fontsize=9)
        ax.set_title(title, loc="left", fontsize=10)
    from matplotlib.patches import Patch

    legend = [
        Patch(facecolor="#777777", alpha=0.35, hatch="//", edgecolor="white", label="seen (sample of train)"),
        Patch(facecolor="#777777", label="held-out (never trained on)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Primary metric: held-out vs seen", x=0.01, ha="left", fontsize=11)
    return Plot("plot-held-out-vs-seen", "primary metric on held-out and seen examples per task", _png(fig))


def draw_plots(run: Run) -> dict[str, list[Plot]]:
    """Every figure of the page, by section; sections without data have no plot."""
    groups = group_rows(run.records)
    titles = {key: _group_title(*key, groups) for key in groups}
    all_rows = [r for rows in groups.values() for r in rows]
    colors = _palette(r.method for r in sorted(all_rows, key=_method_order))
    for row in all_rows:
        if not row.trains:
            colors[row.method] = _BASE_COLOR
    pareto = [plot_pareto(m, t, rows, colors, titles[(m, t)]) for (m, t), rows in groups.items()]
    sections = {
        "pareto": pareto,
        "cost": [plot_train_time(groups, titles, colors), plot_adapter_size(all_rows, colors)],
        "loss": [plot_loss_curves(groups, titles, colors)],
        "generalization": [plot_held_out_vs_seen(groups, titles, colors)],
    }
    return {name: [p for p in plots if p is not None] for name, plots in sections.items()}


# --------------------------------------------------------------------------- html

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa; --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
main { max-width: 1400px; margin: 0 auto; padding: 28px 32px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 26px 0 6px; }
p.lead, .muted { color: var(--muted); }
nav { margin: 14px 0 6px; font-size: 14px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 16px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--soft); }
.card h3 { margin: 0 0 6px; }
.card ul { margin: 0; padding-left: 18px; font-size: 14px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; display: block; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 4px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { text-align: left; background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; }
span.sd { color: var(--muted); font-size: 12px; }
tr.base td { color: var(--muted); }
span.front { color: #8250df; font-weight: 700; margin-left: 4px; }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
          background: #ffebe9; color: var(--bad); }
td.reason { white-space: normal; max-width: 720px; font-family: ui-monospace, monospace; font-size: 12.5px; }
td.better { color: var(--good); } td.worse { color: var(--bad); }
ul.problems { font-family: ui-monospace, monospace; font-size: 13px; }
footer { margin-top: 48px; font-size: 12.5px; color: var(--muted); }
"""

# Marks the page once every image has decoded, so a headless browser (and a test) can tell that
# each plot rendered: data-plots-ok="true" and data-plot-count on <body>.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-plot-count", String(imgs.length));
  document.body.setAttribute("data-plots-ok", ok ? "true" : "false");
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure_html(plot: Plot, wide: bool = False) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img id="{_e(plot.id)}" alt="{_e(plot.alt)}" src="data:image/png;base64,{data}">'
        "</figure>"
    )


def _value_html(text: str) -> str:
    """``0.480 ± 0.007`` with the deviation set smaller, so the means line up and read first."""
    match = re.fullmatch(r"(\S+) ± (\S+)(.*)", text)
    if not match:
        return _e(text)
    mean, std, unit = (_e(g) for g in match.groups())
    return f'{mean}<span class="sd"> ± {std}</span>{unit}'


def _table_html(rows: Sequence[Row]) -> str:
    columns = table_columns(rows)
    metric = _primary(rows)
    front = _front_of(rows, metric)
    show_seeds = any(len(r.records) > 1 for r in rows)
    # Bold marks the best held-out score and the cheapest training; a high *seen* score is no virtue.
    best = {
        c.header: _best(rows, c.quantity) for c in columns if c.quantity.block in ("held_out", "training")
    }
    head = "<th>Method</th>" + ("<th class=num>Seeds</th>" if show_seeds else "")
    head += "".join(f"<th class=num>{_e(c.header).replace(' ', '<br>', 1)}</th>" for c in columns)
    body = []
    for row in rows:
        mark = (
            '<span class="front" title="on the quality/memory Pareto front">◆</span>'
            if row.method in front
            else ""
        )
        cells = [f"<td>{_e(row.method)}{mark}</td>"]
        if show_seeds:
            cells.append(f"<td class=num>{len(row.records)}</td>")
        for c in columns:
            cls = (
                "num best"
                if best.get(c.header) == row.method and c.quantity.name != "trainable_params"
                else "num"
            )
            cells.append(f'<td class="{cls}">{_value_html(c.render(row))}</td>')
        tr_cls = ' class="base"' if not row.trains else ""
        body.append(f"<tr{tr_cls}>{''.join(cells)}</tr>")
    return _wrap_table(head, body)


def _html_table(table: Table) -> str:
    head = "".join(
        f"<th{' class=num' if r else ''}>{_e(h)}</th>" for h, r in zip(table.header, table.right, strict=True)
    )
    body = []
    for row in table.rows:
        cells = []
        for text, right in zip(row, table.right, strict=True):
            classes = ["num"] if right else []
            if "▲" in text:
                classes.append("better")
            elif "▼" in text:
                classes.append("worse")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{_e(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _wrap_table(head, body)


def _wrap_table(head: str, body: Sequence[str]) -> str:
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


def _comparison_html(reference: Run, current: Run, result: ComparisonResult) -> str:
    facts, headline, detail = comparison_parts(reference, current, result)
    lead = _COMPARISON_LEAD.format(new=current.run_id, old=reference.run_id)
    parts = [
        '<section id="comparison">',
        f"<h2>Comparison with {_e(reference.run_id)}</h2>",
        f'<p class="lead">{_e(lead)}</p>',
        "<ul>" + "".join(f"<li>{_e(fact)}</li>" for fact in facts) + "</ul>",
        "<h3>Per case</h3>",
        _html_table(headline),
        "<h3>Every value that changed</h3>",
        _html_table(detail) if detail.rows else '<p class="muted">Nothing changed.</p>',
        "</section>",
    ]
    return "\n".join(parts)


def report_html(
    run: Run,
    plots: Mapping[str, Sequence[Plot]],
    reference: Run | None = None,
    comparison: ComparisonResult | None = None,
) -> str:
    groups = group_rows(run.records)
    failed = failed_records(run.records)
    seeded = any(len(row.records) > 1 for rows in groups.values() for row in rows)
    sections = [
        ("highlights", "Highlights"),
        ("pareto", "Quality vs memory"),
        ("cost", "Cost"),
        ("loss", "Loss curves"),
        ("generalization", "Held-out vs seen"),
        ("tables", "Tables"),
    ]
    if failed:
        sections.append(("failed", "Failed cases"))
    problems = _problems(run, reference)
    if problems:
        sections.append(("problems", "Unreadable records"))
    if comparison is not None:
        sections.append(("comparison", "Comparison"))
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>peftcore report · {_e(run.run_id)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CHECK_SCRIPT}</script>",
        "</head><body><main>",
        "<h1>peftcore report</h1>",
        f'<p class="lead">Parameter-efficient fine-tuning benchmark, run <b>{_e(run.run_id)}</b>'
        + (f", compared with <b>{_e(reference.run_id)}</b>" if reference else "")
        + "</p>",
        "<nav>" + "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in sections) + "</nav>",
        '<dl class="facts">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in run_facts(run))
        + "</dl>",
    ]
    if seeded:
        out.append('<p class="muted">Values are mean ± standard deviation over the seeds of each row.</p>')
    out.append('<section id="highlights"><h2>Highlights</h2><div class="cards">')
    for key, rows in groups.items():
        notes = highlights(rows)
        if notes:
            items = "".join(f"<li>{_e(n)}</li>" for n in notes)
            out.append(f'<div class="card"><h3>{_e(_group_title(*key, groups))}</h3><ul>{items}</ul></div>')
    out.append("</div></section>")
    captions = {
        "pareto": (
            "Quality vs peak training memory",
            "Each point is a method (mean over seeds, bars ± one standard deviation). The dashed line joins "
            "the Pareto front: methods no other method beats on both memory and quality. The dotted line is "
            "the untrained base model.",
        ),
        "cost": ("Cost", "Training time per method and task, and the size of what each method saves."),
        "loss": (
            "Loss curves",
            "Training loss per logged step; with several seeds, their mean and (shaded) their range.",
        ),
        "generalization": (
            "Held-out vs seen",
            "The primary metric on held-out examples (never trained on, solid) and on a sample of the "
            "training examples (hatched). A large gap means memorizing rather than learning the task.",
        ),
    }
    for sid, (title, caption) in captions.items():
        out.append(f'<section id="{sid}"><h2>{_e(title)}</h2><p class="lead">{_e(caption)}</p>')
        section_plots = plots.get(sid, [])
        if section_plots:
            wide = sid in ("loss", "generalization")
            out.append(
                '<div class="plots">' + "".join(_figure_html(p, wide) for p in section_plots) + "</div>"
            )
        else:
            out.append('<p class="muted">No finished case has the data for this plot.</p>')
        out.append("</section>")
    out.append('<section id="tables"><h2>Tables</h2>')
    out.append(
        '<p class="lead">Bold: the best value of the column. ◆: on the quality/memory Pareto front. '
        f"{DASH}: not measured (the base model does not train).</p>"
    )
    for key, rows in groups.items():
        metric = _primary(rows)
        direction = higher_is_better(metric) if metric else None
        better = {True: "higher is better", False: "lower is better", None: "direction unknown"}[direction]
        out.append(f"<h3>{_e(_group_title(*key, groups))}</h3>")
        if metric:
            out.append(
                f'<p class="muted">Model {_e(key[0])}; primary metric: held-out {_e(metric)} ({better}).</p>'
            )
        out.append(_table_html(rows))
    out.append("</section>")
    if failed:
        out.append('<section id="failed"><h2>Failed cases</h2>')
        out.append(
            '<p class="lead">Cases that did not finish; they have no numbers and are left out above.</p>'
        )
        out.append("<table><thead><tr><th>Case</th><th>Status</th><th>Reason</th></tr></thead><tbody>")
        for r in failed:
            out.append(
                f"<tr><td>{_e(r['case_id'])}</td><td><span class=status>{_e(r['status'])}</span></td>"
                f'<td class="reason" title="{_e(r.get("reason") or "")}">{_e(_reason(r))}</td></tr>'
            )
        out.append("</tbody></table></section>")
    if problems:
        out.append('<section id="problems"><h2>Record files that could not be read</h2><ul class="problems">')
        out.extend(f"<li>{_e(p)}</li>" for p in problems)
        out.append("</ul></section>")
    if reference is not None and comparison is not None:
        out.append(_comparison_html(reference, run, comparison))
    out.append(
        "<footer>Built by <code>peftcore report</code> from the case records in "
        f"<code>{_e(run.run_dir)}</code>; summary.csv and summary.md hold the same numbers.</footer>"
    )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"


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
            quality = f"{metric} {_num(value)}" if metric and value is not None else DASH
        else:
            quality = _reason(record, 60)
        rows.append(
            (
                str(record["case_id"]),
                str(record.get("status")),
                fmt_seconds(Stat(seconds, None, 1)) if seconds is not None else DASH,
                human_bytes(memory) if memory is not None else DASH,
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
