"""Beyond the task: in-domain gain against forgetting and out-of-distribution change, per task.

For each (model, training task) whose records carry scores outside the task (profile
``eval.forgetting``: ``general_text``; ``eval.also_score``: ``metrics["ood.<task>"]``), a table
with one row per method: its held-out primary metric and the change against the untrained base
of the same group, the loss on general text before and after and the forgetting (after - before,
nats per token, lower is better), and each other task's primary metric with its change against
the base. And a plot per group of in-domain gain against forgetting, with the Pareto front:
the methods no other method beats on both (more gain for no more forgetting).

Markdown (:func:`off_task_md`), the page (:mod:`peftcore.report.html`) and the plot
(:func:`off_task_plots`) start from :func:`off_task_tables`, so they agree. Records without
such scores give no table and no plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from peftcore.report.canvas import BASE_COLOR, method_colors, new_figure, png_bytes, style_axes
from peftcore.report.formats import DASH
from peftcore.report.plots import Plot, _slug
from peftcore.report.rows import (
    Groups,
    Row,
    direction_words,
    every_row,
    group_rows,
    group_title,
    pareto_front,
    primary_of,
)
from peftcore.results.store import Run
from peftcore.vocab.quantities import Quantity, higher_is_better, ood_primary, ood_tasks
from peftcore.vocab.record import OOD_PREFIX

FORGETTING = Quantity("general_text", "forgetting")
_BEFORE, _AFTER = Quantity("general_text", "before_loss"), Quantity("general_text", "after_loss")
LEAD = (
    "What fine-tuning cost outside its task. Forgetting: the mean next-token loss on general text "
    "after fine-tuning minus that of the untouched base model of the same variant (nats per token, "
    "lower is better; 0 for the base). Other tasks: each one's held-out primary metric, and in "
    "parentheses its change against the untrained base. ◆: on the gain/forgetting Pareto front."
)


@dataclass(frozen=True)
class OffTaskTable:
    """One (model, training task): its rows as text, and the points of its gain/forgetting plot."""

    model: str
    task: str
    title: str
    note: str
    header: list[str]
    right: list[bool]
    rows: list[list[str]]
    base_rows: list[bool]  # which rows are the untrained base
    points: list[tuple[str, float, float]]  # (method, forgetting, gain) of the trained methods
    front: list[str]  # methods on the gain/forgetting Pareto front
    gain_words: str  # the y axis: what the gain is


def _mean(row: Row | None, quantity: Quantity) -> float | None:
    stat = row.stat(quantity) if row is not None else None
    return None if stat is None or math.isnan(stat.mean) else stat.mean


def _with_change(value: float | None, base: float | None) -> str:
    if value is None:
        return DASH
    return f"{value:.3f}" + (f" ({value - base:+.3f})" if base is not None else "")


def off_task_tables(groups: Groups) -> list[OffTaskTable]:
    """A table per group whose records carry a forgetting or out-of-distribution score."""
    tables = []
    for (model, task), rows in groups.items():
        records = [r for row in rows for r in row.records]
        others = list(dict.fromkeys(t for r in records for t in ood_tasks(r)))
        forgetting = any(FORGETTING.value(r) is not None for r in records)
        if not (forgetting or others):
            continue
        base = next((row for row in rows if not row.trains), None)
        metric = primary_of(rows)
        quality = Quantity("held_out", metric) if metric else None
        ood = [Quantity(OOD_PREFIX + t, _ood_metric(records, t)) for t in others]
        header = ["Method"]
        if quality is not None:
            header.append(f"Held-out {metric} (vs base)")
        if forgetting:
            header += ["General-text loss (base → after)", "Forgetting"]
        header += [f"{q.ood_task} {q.name} (vs base)" for q in ood]
        direction = higher_is_better(metric) if metric else None
        points = []
        for row in rows:
            gain = _gain(row, base, quality, direction)
            lost = _mean(row, FORGETTING)
            if row.trains and gain is not None and lost is not None:
                points.append((row.method, lost, gain))
        front = pareto_front(points, higher_better=True)
        body = []
        for row in rows:
            cells = [row.method + (" ◆" if row.method in front else "")]
            if quality is not None:
                cells.append(_with_change(_mean(row, quality), _mean(base, quality)))
            if forgetting:
                before, after, lost = _mean(row, _BEFORE), _mean(row, _AFTER), _mean(row, FORGETTING)
                cells.append(
                    f"{before:.3f} → {after:.3f}" if before is not None and after is not None else DASH
                )
                cells.append(f"{lost:+.4f}" if lost is not None else DASH)
            cells += [_with_change(_mean(row, q), _mean(base, q)) for q in ood]
            body.append(cells)
        better = direction_words(metric) if metric else None
        note = f"Model {model}; trained on {task}" + (
            f"; in-domain metric: held-out {metric}" if metric else ""
        )
        tables.append(
            OffTaskTable(
                model=model,
                task=task,
                title=group_title(model, task, groups),
                note=note + (f" ({better})." if better else "."),
                header=header,
                right=[False] + [True] * (len(header) - 1),
                rows=body,
                base_rows=[not row.trains for row in rows],
                points=points,
                front=front,
                gain_words=f"in-domain gain: held-out {metric} vs base"
                + (" (reversed: lower is better)" if direction is False else ""),
            )
        )
    return tables


def _ood_metric(records: Sequence[Mapping[str, object]], task: str) -> str:
    """The primary metric of another task, as the first record that names one says."""
    return next((name for r in records if (name := ood_primary(r, task))), "primary")


def _gain(row: Row, base: Row | None, quality: Quantity | None, direction: bool | None) -> float | None:
    """How much better than the base the row scores in-domain, in the metric's better direction."""
    if quality is None or direction is None:
        return None
    value, reference = _mean(row, quality), _mean(base, quality)
    if value is None or reference is None:
        return None
    return value - reference if direction else reference - value


def off_task_md(records: Sequence[Mapping[str, object]]) -> list[str]:
    """summary.md's section (its lines), or nothing when no record carries such scores."""
    tables = off_task_tables(group_rows(records))
    if not tables:
        return []
    lines = ["## Beyond the task: forgetting and other tasks", "", LEAD, ""]
    for table in tables:
        lines += [f"### {table.title}", "", table.note, ""]
        lines.append("| " + " | ".join(table.header) + " |")
        lines.append("|" + "|".join("---:" if r else "---" for r in table.right) + "|")
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
        lines.append("")
    return lines


def off_task_plots(run: Run) -> list[Plot]:
    """One gain/forgetting plot per group that has a trained method with both numbers."""
    groups = group_rows(run.records)
    colors = method_colors(every_row(groups))
    plots = [_plot(table, colors) for table in off_task_tables(groups)]
    return [p for p in plots if p is not None]


def _isolated(points: Sequence[tuple[str, float, float]]) -> set[str]:
    """The methods far enough from every other point (the base at the origin included) for a
    label next to them; the rest are told apart by the legend's colors."""
    xs, ys = [x for _, x, _ in points] + [0.0], [y for _, _, y in points] + [0.0]
    width, height = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    spots = [(n, x / width, y / height) for n, x, y in points] + [("", 0.0, 0.0)]
    return {
        name
        for name, u, v in spots[:-1]
        if not any(other != name and abs(u - a) < 0.1 and abs(v - b) < 0.08 for other, a, b in spots)
    }


def _plot(table: OffTaskTable, colors: Mapping[str, str]) -> Plot | None:
    """In-domain gain (y) against forgetting (x), the front joined, the base at the origin."""
    if not table.points:
        return None
    fig = new_figure(8.6, 4.5)
    ax = fig.add_subplot()
    style_axes(ax)
    by_name = {name: (x, y) for name, x, y in table.points}
    if len(table.front) > 1:
        xs, ys = zip(*(by_name[name] for name in table.front), strict=True)
        ax.plot(xs, ys, "--", color="#333333", linewidth=1.1, zorder=1, label="Pareto front")
    labelled = _isolated(table.points)
    for name, x, y in table.points:
        on_front = name in table.front
        ax.scatter(
            [x],
            [y],
            s=80 if on_front else 50,
            color=colors.get(name, "#555555"),
            zorder=3,
            edgecolors="#222222" if on_front else "white",
            linewidths=1.4 if on_front else 0.8,
            label=name + (" (Pareto front)" if on_front else ""),
        )
        if name in labelled:
            ax.annotate(
                name,
                (x, y),
                xytext=(7, 5),
                textcoords="offset points",
                fontsize=9 if on_front else 7.5,
                fontweight="bold" if on_front else "normal",
                zorder=4,
            )
    ax.scatter([0], [0], s=50, color=BASE_COLOR, marker="s", zorder=2, label="untrained base")
    ax.axvline(0, color=BASE_COLOR, linestyle=":", linewidth=1.2)
    ax.axhline(0, color=BASE_COLOR, linestyle=":", linewidth=1.2)
    ax.set_xlabel("forgetting: general-text loss after − base (nats/token, lower is better)")
    ax.set_ylabel(table.gain_words, fontsize=9)
    ax.set_title(f"{table.title}: in-domain gain vs forgetting", loc="left", fontsize=11)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    alt = f"{table.title}: in-domain gain against forgetting on general text, per method"
    return Plot(f"plot-forgetting-{_slug(f'{table.task}-{table.model}')}", alt, png_bytes(fig))
