"""What every report output says, whatever its format: rows, numbers, findings and facts.

Finished records are grouped into one row per (model, task, method), the seeds of a row merged
into mean ± standard deviation (:class:`Stat`). The Markdown tables (:mod:`peftcore.report.build`), the
page (:mod:`peftcore.report.html`) and the figures (:mod:`peftcore.report.plots`) all draw on
the rows, formats, highlights, run facts and comparison tables defined here, so they agree.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peftcore.gates.baseline import ComparisonResult, ComparisonRow
from peftcore.results.quantities import Quantity, higher_is_better, metric_names
from peftcore.results.record import case_seed, primary_metric
from peftcore.results.store import Run
from peftcore.units import byte_unit, format_bytes

DASH = "—"
SEEDS_NOTE = "Values are mean ± standard deviation over the seeds of each row."


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


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def method_order(row: Row) -> tuple[Any, ...]:
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
    return {key: sorted(group, key=method_order) for key, group in groups.items()}


def _metrics_of(rows: Sequence[Row]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        for record in row.records:
            for name in metric_names(record, "held_out"):
                names.setdefault(name)
    return list(names)


def primary_of(rows: Sequence[Row]) -> str | None:
    """The primary metric of a (model, task): the first one a row's records name."""
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


def pareto_methods(rows: Sequence[Row], metric: str | None) -> list[str]:
    """The trained methods on the front of held-out ``metric`` against peak training memory."""
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


# --------------------------------------------------------------------------- labels


def seeded(rows: Iterable[Row]) -> bool:
    """Whether any row merges several seeds (then values carry ± and tables a Seeds column)."""
    return any(len(row.records) > 1 for row in rows)


def direction_words(metric: str) -> str | None:
    """``higher is better`` or ``lower is better``; None when the metric declares no direction."""
    direction = higher_is_better(metric)
    return None if direction is None else "higher is better" if direction else "lower is better"


def primary_note(model: str, metric: str) -> str:
    """The line under a group's title: its model and primary metric, with the metric's direction."""
    better = direction_words(metric) or "direction unknown"
    return f"Model {model}; primary metric: held-out {metric} ({better})."


def group_title(model: str, task: str, groups: Mapping[tuple[str, str], Any]) -> str:
    several_models = len({m for m, _ in groups}) > 1
    return f"{task} · {model}" if several_models else task


# --------------------------------------------------------------------------- formatting


def fmt_value(value: float) -> str:
    """A metric value: 0.480, 31.07, 412.5."""
    return "NaN" if math.isnan(value) else f"{value:.{_decimals(value, 3)}f}"


_COUNT_UNITS = (("K", 1e3), ("M", 1e6), ("B", 1e9))


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
    unit, scale = byte_unit(stat.mean)
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
    """921600 -> ``921.6 K``; below a thousand the number itself."""
    for unit, scale in reversed(_COUNT_UNITS):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:,.0f}"


def fmt_percent(value: float) -> str:
    if value >= 10:
        return f"{value:.0f}%"
    return f"{value:.2g}%" if value > 0 else "0%"


def fmt_metric(stat: Stat) -> str:
    return _pm(stat.mean, stat.std, base=3)


def fmt_ms(stat: Stat) -> str:
    return _pm(stat.mean, stat.std, base=2, unit="ms")


# --------------------------------------------------------------------------- columns and highlights


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


def best_method(rows: Sequence[Row], quantity: Quantity) -> str | None:
    """The method with the best mean of ``quantity`` by its direction; None with fewer than two."""
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
                gain = f" ({delta:+.{_decimals(stat.mean, 3)}f} vs {base.method if base else ''})"
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
    return [
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


def unreadable(run: Run, reference: Run | None) -> list[str]:
    """Unreadable record files of the reported run and of the run it is compared with."""
    return [*run.problems, *(reference.problems if reference is not None else ())]


def failed_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return sorted((r for r in records if r["status"] != "finished"), key=lambda r: str(r["case_id"]))


def reason_line(record: Mapping[str, Any], limit: int = 240) -> str:
    """The first line of why a case did not finish, cut to ``limit`` characters."""
    text = str(record.get("reason") or "no reason recorded").strip()
    first = text.splitlines()[0] if text else text
    return first if len(first) <= limit else first[: limit - 1] + "…"


# --------------------------------------------------------------------------- comparison


_ARROW = {"better": "▲ better", "worse": "▼ worse", "same": "= same", "changed": "≠ changed"}
_MARK = {"better": " ▲", "worse": " ▼"}


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
    arrow = _MARK.get(row.verdict, "")
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
                (_change(main) + _MARK.get(main.verdict, "")) if main else DASH,
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


COMPARISON_LEAD = (
    "{new} against {old}, case by case (matched on method, model, task and seed). ▲ better, ▼ worse, by "
    "each metric's declared direction; comparison.csv holds every value."
)
