"""Finished records as table rows: one per (model, task, method), its seeds merged into a mean ± std.

The numbers come from the records' DataFrame (:func:`peftcore.results.frame.records_frame`):
mean, standard deviation and count over a row's seeds are one ``groupby``
(:func:`peftcore.results.frame.seed_stats`); a row keeps its records for what is not a number
(the loss curve, the tuner).

The tables (:mod:`peftcore.report.tables`), the page (:mod:`peftcore.report.html`) and the
figures (:mod:`peftcore.report.plots`) all start from :func:`group_rows`, so they agree on what a
row is, the order rows come in, each group's primary metric and which methods are on the
quality/memory Pareto front. Records that did not finish are left out here (they have no numbers).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from peftcore.results.frame import GROUP_KEYS, quantity_column, records_frame, seed_stats
from peftcore.vocab.quantities import Quantity, higher_is_better, metric_names
from peftcore.vocab.record import primary_metric

SEEDS_NOTE = "Values are mean ± standard deviation over the seeds of each row."


# --------------------------------------------------------------------------- rows


@dataclass(frozen=True)
class Stat:
    """A quantity over the seeds of a row: their mean, their standard deviation, how many."""

    mean: float
    std: float | None  # None for a single value
    n: int


@dataclass
class Row:
    """One (model, task, method): its finished records, one per seed."""

    model: str
    task: str
    method: str
    records: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Stat] = field(default_factory=dict)  # column of the records' frame -> over seeds

    def stat(self, quantity: Quantity) -> Stat | None:
        """``quantity`` over the row's seeds; None when no record carries it."""
        return self.stats.get(quantity_column(quantity.resolve(self.records[0])))

    def uncertainty(self, quantity: Quantity, field: str) -> Stat | None:
        """A metric's ``stderr``, ``ci_low`` or ``ci_high`` over the seeds that recorded it
        (columns of :data:`~peftcore.results.frame.UNCERTAINTY_FIELDS`); None when none did."""
        return self.stats.get(f"{quantity_column(quantity.resolve(self.records[0]))}.{field}")

    @property
    def tuner(self) -> str:
        return str(((self.records[0].get("spec") or {}).get("method") or {}).get("tuner", ""))

    @property
    def trains(self) -> bool:
        return self.tuner != "none" and self.records[0].get("training") is not None


Groups = Mapping[tuple[str, str], Sequence[Row]]  # (model, task) -> its rows, in reading order


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def method_order(row: Row) -> tuple[Any, ...]:
    """The untrained base first, then full fine-tuning, then the PEFT methods by name."""
    rank = 0 if row.tuner == "none" else 1 if row.tuner == "full" else 2
    return (rank, _natural(row.method))


def group_rows(records: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str], list[Row]]:
    """Finished records by (model, task), then by method (seeds together), in reading order."""
    finished = [dict(r) for r in records if r.get("status") == "finished"]
    rows: dict[tuple[str, str, str], Row] = {}
    for record in finished:
        key = (str(record["model"]), str(record["task"]), str(record["method"]))
        rows.setdefault(key, Row(*key)).records.append(record)
    if finished:
        # Every record given is a row (the Tuning section groups a search's default runs too).
        stats = seed_stats(records_frame(finished, trials=True), by=GROUP_KEYS)
        for key, row in rows.items():
            row.stats = _row_stats(stats.loc[key])
    groups: dict[tuple[str, str], list[Row]] = {}
    for (model, task, _), row in sorted(
        rows.items(), key=lambda kv: (_natural(kv[0][0]), _natural(kv[0][1]))
    ):
        groups.setdefault((model, task), []).append(row)
    return {key: sorted(group, key=method_order) for key, group in groups.items()}


def _row_stats(stats: Any) -> dict[str, Stat]:
    """One group of :func:`seed_stats` (a Series by (column, mean | std | count)) as Stats; a
    column none of the row's records carries is left out, a single value has no deviation."""
    out = {}
    for column in dict.fromkeys(stats.index.get_level_values(0)):
        n = int(stats[(column, "count")])
        if n:
            std = float(stats[(column, "std")]) if n > 1 else None
            out[column] = Stat(float(stats[(column, "mean")]), std, n)
    return out


def every_row(groups: Groups) -> list[Row]:
    """The rows of all groups, group after group."""
    return [row for rows in groups.values() for row in rows]


def held_out_metrics(rows: Sequence[Row]) -> list[str]:
    """Every held-out metric the rows' records speak of, declared ones first, each once."""
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


# --------------------------------------------------------------------------- quality against memory


def pareto_front(points: Sequence[tuple[str, float, float]], higher_better: bool) -> list[str]:
    """Names of the (name, cost, quality) points no other point beats on both cost (lower) and
    quality, cheapest first; points with a NaN are left out.

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


def memory_and_quality(rows: Sequence[Row], metric: str) -> list[tuple[Row, Stat, Stat]]:
    """The trained rows with both a peak training memory and a held-out ``metric``, and the two."""
    memory, quality = Quantity("training", "peak_memory_bytes"), Quantity("held_out", metric)
    points = []
    for row in rows:
        cost, value = row.stat(memory), row.stat(quality)
        if row.trains and cost and value:
            points.append((row, cost, value))
    return points


def pareto_methods(rows: Sequence[Row], metric: str | None) -> list[str]:
    """The trained methods on the front of held-out ``metric`` against peak training memory;
    none when the metric declares no direction."""
    direction = higher_is_better(metric) if metric else None
    if metric is None or direction is None:
        return []
    points = [(row.method, cost.mean, value.mean) for row, cost, value in memory_and_quality(rows, metric)]
    return pareto_front(points, direction)


# --------------------------------------------------------------------------- headings


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
    """A group's heading: its task, and its model too when the run covers several models."""
    several_models = len({m for m, _ in groups}) > 1
    return f"{task} · {model}" if several_models else task
