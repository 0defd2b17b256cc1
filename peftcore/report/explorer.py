"""The interactive comparison on report.html: pick model, task, x and y; the Pareto front follows.

:func:`explorer_data` turns the records' DataFrame (:func:`peftcore.results.frame.records_frame`,
what :func:`peftcore.load_results` returns) into what the page embeds: per (model, task), one point
per method (the mean over its finished seeds, with their standard deviation), the text shown on
hover, and the Pareto front of every (x, y) pair, computed here in each quantity's declared
direction (``frame.attrs["higher_is_better"]``). Cases that did not finish are left out. A score
carries half its 95% interval over the examples (the bars), and, given the records, each plot
knows which methods a paired test cannot tell from the best (:mod:`peftcore.report.certainty`):
the page fades them.

:func:`peftcore.report.explorer_page.explorer_html` renders it.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftcore.report.canvas import BASE_COLOR
from peftcore.report.certainty import indistinct_from_best
from peftcore.report.formats import decimals, fmt_bytes, fmt_count, fmt_metric, fmt_ms, fmt_seconds
from peftcore.report.rows import Row, Stat, group_rows, pareto_front
from peftcore.results.frame import GROUP_KEYS, figure_column, is_uncertainty_column, seed_stats
from peftcore.units import BINARY_UNITS, byte_unit
from peftcore.vocab.quantities import Quantity
from peftcore.vocab.record import METRIC_BLOCKS, OOD_PREFIX

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["X_AXES", "XAxis", "explorer_data", "two_way_front"]

# matplotlib's tab10 (plotly calls it D3): the static plots give the same method the same color
# while a run has at most ten methods.
_PALETTE = (
    *("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"),
    *("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"),
)
_FORGETTING = figure_column("general_text", "forgetting")


@dataclass(frozen=True)
class XAxis:
    """A cost figure the reader can put on the x axis: its column and how the axis names it."""

    column: str
    words: str  # "peak training memory"
    log: bool  # spans orders of magnitude across methods (IA3's adapter vs a full model)


X_AXES = (
    XAxis(figure_column("training", "peak_memory_bytes"), "peak training memory", log=False),
    XAxis(figure_column("training", "train_seconds"), "training time", log=False),
    XAxis(figure_column("training", "adapter_bytes"), "adapter size", log=True),
    XAxis(figure_column("inference", "latency_ms_per_example"), "inference latency", log=False),
    XAxis(figure_column("training", "trainable_params"), "trainable parameters", log=True),
)
_X_WORDS = {axis.column: axis.words for axis in X_AXES}


# --------------------------------------------------------------------------- the front


def two_way_front(
    points: Sequence[tuple[str, float, float]], x_higher_is_better: bool, y_higher_is_better: bool
) -> list[str]:
    """Names of the (name, x, y) points no other point beats on both x and y, each in its own
    direction, in order of x; points with a NaN are left out.

    >>> two_way_front([("a", 1.0, 0.5), ("b", 2.0, 0.6), ("c", 2.5, 0.55)], False, True)
    ['a', 'b']
    >>> two_way_front([("a", 1.0, 30.0), ("b", 2.0, 20.0), ("c", 1.5, 35.0)], False, False)
    ['a', 'b']
    """
    sign = -1.0 if x_higher_is_better else 1.0
    front = set(pareto_front([(n, sign * x, y) for n, x, y in points], y_higher_is_better))
    return [n for n, x, _ in sorted(points, key=lambda p: p[1]) if n in front]


# --------------------------------------------------------------------------- the data


def _natural(text: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _y_words(column: str) -> str:
    """``held-out accuracy``, ``seen f1``, ``nq_open accuracy (other task)``, ``forgetting (nats/token)``."""
    head, _, name = column.partition(".")
    if column == _FORGETTING:
        return "forgetting on general text (nats/token)"
    if head == "ood":
        task, _, metric = name.partition(".")
        return f"{task} {metric} (other task)"
    return f"{head.replace('_', '-')} {name}"


def _is_y_column(column: str) -> bool:
    if is_uncertainty_column(column):  # a metric's stderr or interval end: drawn as its bar
        return False
    return column.partition(".")[0] in METRIC_BLOCKS or column.startswith(OOD_PREFIX) or column == _FORGETTING


def _better(direction: bool | None) -> str:
    return "" if direction is None else " (higher is better)" if direction else " (lower is better)"


def _x_unit(column: str, values: Sequence[float]) -> tuple[str, float]:
    """The unit an x axis is drawn in and its size: bytes in the binary unit of the largest value
    (at least MiB), seconds as minutes past ten of them."""
    top = max(values, default=0.0)
    if column.endswith("_bytes"):
        return max(byte_unit(top), ("MiB", dict(BINARY_UNITS)["MiB"]), key=lambda unit: unit[1])
    if column.endswith("_seconds"):
        return ("min", 60.0) if top >= 600 else ("s", 1.0)
    if column.endswith("_ms_per_example"):
        return "ms per example", 1.0
    return "", 1.0


def _fmt(column: str, stat: Stat) -> str:
    """A figure as the tables write it (``1.18 ± 0.01 GiB``, ``3 min 08 s``, ``0.480 ± 0.007``)."""
    if column.endswith("_bytes"):
        return fmt_bytes(stat)
    if column.endswith("_seconds"):
        return fmt_seconds(stat)
    if column.endswith("_ms_per_example"):
        return fmt_ms(stat)
    if column.endswith("_params"):
        return fmt_count(stat.mean)
    return fmt_metric(stat)


def _method_rank(tuner: str, method: str) -> tuple[Any, ...]:
    """The untrained base first, then full fine-tuning, then the PEFT methods by name (as the tables)."""
    return (0 if tuner == "none" else 1 if tuner == "full" else 2, _natural(method))


def _hover(
    method: str,
    model: str,
    task: str,
    case_ids: Sequence[str],
    stats: Mapping[str, Stat],
    y_columns: Sequence[str],
    half_widths: Mapping[str, float],
) -> str:
    e = html.escape
    lines = [f"<b>{e(method)}</b> · {e(model)} · {e(task)}"]
    shown = case_ids if len(case_ids) <= 4 else [*case_ids[:3], f"and {len(case_ids) - 3} more"]
    lines += [e(case_id) for case_id in shown]
    if len(case_ids) > 1:
        lines.append(f"mean ± std over {len(case_ids)} seeds")
    for column in (*_X_WORDS, *y_columns):
        stat = stats.get(column)
        if stat is not None:
            words = _X_WORDS.get(column) or _y_words(column)
            width = half_widths.get(column)
            interval = "" if width is None else f" (95% CI ± {width:.{decimals(stat.mean, 3)}f})"
            lines.append(f"{e(words)}: {e(_fmt(column, stat))}{interval}")
    return "<br>".join(lines)


def _stats(row: Any, columns: Sequence[str]) -> dict[str, Stat]:
    """One group of :func:`seed_stats` as Stats, for the columns it has a value of."""
    out = {}
    for column in columns:
        if (column, "count") not in row.index:
            continue
        n = int(row[(column, "count")])
        if not n:  # no seed carries it (the mean is then missing, not a number)
            continue
        mean, std = float(row[(column, "mean")]), float(row[(column, "std")]) if n > 1 else math.nan
        if math.isfinite(mean):
            out[column] = Stat(mean, std if math.isfinite(std) else None, n)
    return out


def _half_widths(row: Any, columns: Sequence[str]) -> dict[str, float]:
    """Half the 95% interval of each of ``columns`` in one group of :func:`seed_stats` (the
    seeds' interval ends averaged), for the columns whose records carry one."""
    out = {}
    for column in columns:
        ends = [_stats(row, [f"{column}.{end}"]).get(f"{column}.{end}") for end in ("ci_low", "ci_high")]
        low, high = ends
        if low is not None and high is not None:
            out[column] = (high.mean - low.mean) / 2
    return out


def _indistinct(
    rows: Sequence[Row], y_columns: Sequence[str], directions: Mapping[str, bool]
) -> dict[str, list[str]]:
    """y column -> the methods a paired test (Holm over the comparisons with the best) cannot
    tell from the best on it; only metric columns with a direction, and only when some are."""
    out = {}
    for column in y_columns:
        head, _, name = column.rpartition(".")
        if directions.get(column) is None or not (head in METRIC_BLOCKS or head.startswith(OOD_PREFIX)):
            continue
        _, methods = indistinct_from_best(rows, Quantity(head, name))
        if methods:
            out[column] = methods
    return out


def _fronts(
    means: Mapping[str, Mapping[str, float]],
    x_columns: Sequence[str],
    y_columns: Sequence[str],
    directions: Mapping[str, bool],
) -> dict[str, list[str]]:
    """``"<x>|<y>"`` -> the front of the methods' ``means`` (method -> column -> mean), for every
    pair of columns whose directions are known and that some method has both of."""
    fronts = {}
    for x in x_columns:
        for y in y_columns:
            if directions.get(x) is None or directions.get(y) is None:
                continue
            points = [(method, m[x], m[y]) for method, m in means.items() if x in m and y in m]
            if points:
                fronts[f"{x}|{y}"] = two_way_front(points, directions[x], directions[y])
    return fronts


def explorer_data(frame: pd.DataFrame, records: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """What the page embeds, from a frame of :func:`peftcore.results.frame.records_frame` and,
    for the paired tests, the ``records`` it was made of.

    Returns ``{"x_axes": [...], "y_axes": {column: {...}}, "groups": [...]}``. Each group is one
    (model, task) with its ``points`` (one per method: ``mean``, ``std`` and ``ci`` (half the 95%
    interval) by column, ``seeds``, ``case_ids``, ``trains``, ``color``, ``hover``), the
    ``y_columns`` any point has, its ``primary`` column, ``fronts``: ``"<x column>|<y column>"``
    -> the methods on the front, in order of x (no entry when the y column declares no
    direction), and ``indistinct``: y column -> the methods not distinguishable from the best
    (empty without ``records`` or per-example scores). Only finished cases count; no finished
    case gives no groups.
    """
    directions: Mapping[str, bool] = frame.attrs.get("higher_is_better", {})
    finished = frame[frame["status"] == "finished"] if "status" in frame else frame.iloc[0:0]
    x_columns = [axis.column for axis in X_AXES if axis.column in finished.columns]
    y_columns = [c for c in finished.columns if _is_y_column(c)]
    groups: list[dict[str, Any]] = []
    data: dict[str, Any] = {"x_axes": [], "y_axes": {}, "groups": groups}
    if finished.empty:
        return data
    stats = seed_stats(finished, by=GROUP_KEYS)
    tested = group_rows(records)  # the same finished cases as rows, for the paired tests
    by_case = finished.groupby(list(GROUP_KEYS), sort=False)
    case_ids = by_case["case_id"].agg(list)
    tuner_column = "spec.method.tuner"
    tuners = by_case[tuner_column].first() if tuner_column in finished else None
    primaries = by_case["primary_metric"].first()

    def tuner(key: tuple[str, str, str]) -> str:
        value = tuners.get(key) if tuners is not None else None
        return str(value) if isinstance(value, str) else ""

    keys: list[tuple[str, str, str]] = list(case_ids.index)
    methods = sorted({(tuner(k), k[2]) for k in keys}, key=lambda tm: _method_rank(*tm))
    colors: dict[str, str] = {}
    for i, (tuner_name, method) in enumerate(dict.fromkeys(methods)):
        colors.setdefault(method, BASE_COLOR if tuner_name == "none" else _PALETTE[i % len(_PALETTE)])

    used_x: dict[str, list[float]] = {c: [] for c in x_columns}
    used_y: set[str] = set()
    by_group: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
    for key in keys:
        by_group.setdefault((key[0], key[1]), []).append(key)
    for model, task in sorted(by_group, key=lambda mt: (_natural(mt[0]), _natural(mt[1]))):
        members = sorted(by_group[(model, task)], key=lambda k: _method_rank(tuner(k), k[2]))
        group_stats = {k: _stats(stats.loc[k], [*x_columns, *y_columns]) for k in members}
        ys = [c for c in y_columns if any(c in s for s in group_stats.values())]
        points = []
        for key in members:
            st = group_stats[key]
            ci = _half_widths(stats.loc[key], [c for c in ys if c in st])
            points.append(
                {
                    "method": key[2],
                    "case_ids": list(case_ids[key]),
                    "seeds": len(case_ids[key]),
                    "trains": tuner(key) != "none" and any(c.startswith("training.") for c in st),
                    "color": colors[key[2]],
                    "mean": {c: s.mean for c, s in st.items()},
                    "std": {c: s.std for c, s in st.items() if s.std is not None},
                    "ci": ci,
                    "hover": _hover(key[2], model, task, list(case_ids[key]), st, ys, ci),
                }
            )
            for c in x_columns:
                if c in st:
                    used_x[c].append(st[c].mean)
        means = {key[2]: {c: stat.mean for c, stat in group_stats[key].items()} for key in members}
        fronts = _fronts(means, x_columns, ys, directions)
        primary_name = primaries.get(members[0])
        primary = f"held_out.{primary_name}" if isinstance(primary_name, str) else None
        groups.append(
            {
                "model": model,
                "task": task,
                "primary": primary if primary in ys else (ys[0] if ys else None),
                "y_columns": ys,
                "points": points,
                "fronts": fronts,
                "indistinct": _indistinct(tested.get((model, task), []), ys, directions),
            }
        )
        used_y.update(ys)
    for axis in X_AXES:
        if axis.column not in x_columns:
            continue
        unit, scale = _x_unit(axis.column, used_x[axis.column])
        direction = directions.get(axis.column)
        data["x_axes"].append(
            {
                "column": axis.column,
                "words": axis.words,
                "title": axis.words + (f" ({unit})" if unit else "") + _better(direction),
                "scale": scale,
                "log": axis.log,
                "higher_is_better": direction,
            }
        )
    for column in y_columns:
        if column in used_y:
            direction = directions.get(column)
            data["y_axes"][column] = {
                "words": _y_words(column),
                "title": _y_words(column) + _better(direction),
                "higher_is_better": direction,
            }
    return data
