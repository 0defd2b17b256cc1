"""The report's figures, drawn with matplotlib and returned as PNG bytes (:class:`Plot`).

:func:`draw_plots` is the entry: every figure of the page, by section. A figure whose data no
finished case has is left out (never drawn empty). matplotlib is imported inside the functions
that draw, so importing this module stays cheap: :mod:`peftcore.report.build` imports it when the
CLI and the pytest plugin start.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.report.canvas import (
    BASE_COLOR,
    label_bars,
    method_bars,
    method_colors,
    new_figure,
    panel_grid,
    png_bytes,
    style_axes,
)
from peftcore.report.deploy import DeployTable, deploy_tables
from peftcore.report.formats import fmt_seconds
from peftcore.report.rows import (
    Groups,
    Row,
    Stat,
    direction_words,
    every_row,
    group_rows,
    group_title,
    memory_and_quality,
    method_order,
    pareto_methods,
    primary_of,
)
from peftcore.results.store import Run
from peftcore.units import BINARY_UNITS, byte_unit, format_bytes
from peftcore.vocab.quantities import Quantity


@dataclass(frozen=True)
class Plot:
    """One figure: its element id on the page, its alt text, and the PNG."""

    id: str
    alt: str
    png: bytes


@dataclass(frozen=True)
class _Page:
    """What the figures that span every (model, task) share: the groups, their titles, and one
    color per method, the same in every figure."""

    groups: Groups
    titles: Mapping[tuple[str, str], str]
    colors: Mapping[str, str]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


_MIB = ("MiB", dict(BINARY_UNITS)["MiB"])


def _memory_scale(values: Iterable[float]) -> tuple[str, float]:
    """The axis unit for peak memory: the one format_bytes writes the largest value in, at least MiB."""
    return max(byte_unit(max(values, default=0.0)), _MIB, key=lambda unit: unit[1])


def plot_pareto(
    model: str, task: str, rows: Sequence[Row], colors: Mapping[str, str], title: str
) -> Plot | None:
    """Held-out primary metric against peak training memory, one point per trained method, the
    Pareto front joined and the untrained base as a line; None without a point to draw."""
    metric = primary_of(rows)
    if metric is None:
        return None
    points = [p for p in memory_and_quality(rows, metric) if not math.isnan(p[2].mean)]
    if not points:
        return None
    unit, scale = _memory_scale(m.mean for _, m, _ in points)
    fig = new_figure(7.6, 4.5)
    ax = fig.add_subplot()
    style_axes(ax)
    front = pareto_methods(rows, metric)
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
    base_stat = base.stat(Quantity("held_out", metric)) if base else None
    if base is not None and base_stat is not None and not math.isnan(base_stat.mean):
        ax.axhline(
            base_stat.mean,
            color=BASE_COLOR,
            linestyle=":",
            linewidth=1.4,
            label=f"{base.method} (no training)",
        )
    ax.set_xlim(left=0, right=max(m.mean for _, m, _ in points) / scale * 1.18)
    better = direction_words(metric)
    ax.set_xlabel(f"peak training memory ({unit})")
    ax.set_ylabel(f"held-out {metric}" + (f" ({better})" if better else ""))
    ax.set_title(f"{title}: {metric} vs peak training memory", loc="left", fontsize=11)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=8, frameon=False)
    slug = _slug(f"{task}-{model}")
    return Plot(
        f"plot-pareto-{slug}", f"{title}: held-out {metric} against peak training memory", png_bytes(fig)
    )


def plot_train_time(page: _Page) -> Plot | None:
    """One bar per method (its mean over tasks), one marker per task: compact at 17 methods x 10 tasks."""
    quantity = Quantity("training", "train_seconds")
    by_method: dict[str, list[tuple[str, Stat]]] = {}
    for key, rows in page.groups.items():
        for row in sorted(rows, key=method_order):
            stat = row.stat(quantity)
            if row.trains and stat is not None:
                by_method.setdefault(row.method, []).append((page.titles[key], stat))
    if not by_method:
        return None
    methods = sorted(by_method, key=lambda m: method_order(_row_like(page.groups, m)))
    top = max(stat.mean for found in by_method.values() for _, stat in found)
    unit, scale = ("min", 60.0) if top >= 120 else ("s", 1.0)
    means = [statistics.fmean(stat.mean for _, stat in by_method[m]) / scale for m in methods]
    fig, ax = method_bars(methods, means, page.colors, alpha=0.85)
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
    # A label goes past the markers of the method's tasks, not only past its bar.
    ends = [
        max(mean, *(stat.mean / scale for _, stat in by_method[m]))
        for m, mean in zip(methods, means, strict=True)
    ]
    label_bars(ax, ends, [fmt_seconds(Stat(mean * scale, None, 1)) for mean in means], gap=8, fontsize=8)
    ax.set_xlim(0, top / scale * 1.3)
    ax.set_xlabel(
        f"training time ({unit}, lower is better)" + ("; bar: mean over tasks" if len(labels) > 1 else "")
    )
    ax.set_title("Training time per method", loc="left", fontsize=11)
    return Plot("plot-train-time", "training time per method (bars) and per task (markers)", png_bytes(fig))


def _row_like(groups: Groups, method: str) -> Row:
    return next(r for rows in groups.values() for r in rows if r.method == method)


def plot_adapter_size(rows: Sequence[Row], colors: Mapping[str, str]) -> Plot | None:
    """One bar per method: the median adapter size over its cases, on a log axis when sizes span 50x."""
    quantity = Quantity("training", "adapter_bytes")
    sizes: dict[str, list[float]] = {}
    for row in sorted(rows, key=method_order):
        for record in row.records:
            value = quantity.value(record)
            if value is not None and value > 0:
                sizes.setdefault(row.method, []).append(value)
    if not sizes:
        return None
    methods = list(sizes)
    values = [statistics.median(sizes[m]) for m in methods]
    log = max(values) / min(values) >= 50
    fig, ax = method_bars(methods, values, colors)
    if log:
        ax.set_xscale("log")
        ax.set_xlim(min(values) / 3, max(values) * 12)
    else:
        ax.set_xlim(0, max(values) * 1.3)
    label_bars(ax, values, [format_bytes(v) for v in values], gap=4, fontsize=9)
    ticks = [2.0**p for p in range(0, 50, 2) if min(values) / 3 <= 2.0**p <= max(values) * 12] if log else []
    if ticks:
        ax.set_xticks(ticks, [format_bytes(t) for t in ticks])
        ax.minorticks_off()
    else:
        from matplotlib.ticker import FuncFormatter

        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: format_bytes(v)))
    ax.set_xlabel("adapter size on disk" + (" (log scale)" if log else ""))
    ax.set_title("Adapter size per method", loc="left", fontsize=11)
    return Plot("plot-adapter-size", "adapter size on disk per method", png_bytes(fig))


def plot_loss_curves(page: _Page) -> Plot | None:
    """One panel per (model, task): each method's loss curve, its seeds as a mean and a band."""
    colors = page.colors
    panels = []
    for key, rows in page.groups.items():
        curves: dict[str, list[tuple[list[float], list[float]]]] = {}
        for row in rows:
            found = [c for c in (_curve(rec) for rec in row.records) if c is not None]
            if found:
                curves[row.method] = found
        if curves:
            panels.append((page.titles[key], curves))
    if not panels:
        return None
    fig, axes = panel_grid(len(panels))
    handles: dict[str, Any] = {}
    for ax, (title, curves) in zip(axes, panels, strict=True):
        style_axes(ax)
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
    return Plot("plot-loss-curves", "training loss curves per task and method", png_bytes(fig))


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


def plot_held_out_vs_seen(page: _Page) -> Plot | None:
    """One panel per (model, task): its primary metric per method, held-out beside seen."""
    panels = []
    for key, rows in page.groups.items():
        metric = primary_of(rows)
        if metric is None:
            continue
        bars = [
            (r.method, r.stat(Quantity("seen", metric)), r.stat(Quantity("held_out", metric))) for r in rows
        ]
        bars = [(m, s, h) for m, s, h in bars if s or h]
        if bars:
            panels.append((page.titles[key], metric, bars))
    if not panels:
        return None
    methods = max(len(bars) for _, _, bars in panels)
    fig, axes = panel_grid(len(panels), height=3.3, max_cols=3 if methods <= 7 else 2 if methods <= 12 else 1)
    for ax, (title, metric, bars) in zip(axes, panels, strict=True):
        style_axes(ax)
        xs = range(len(bars))
        seen = [s.mean if s else 0.0 for _, s, _ in bars]
        held = [h.mean if h else 0.0 for _, _, h in bars]
        bar_colors = [page.colors[m] for m, _, _ in bars]
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
        better = direction_words(metric)
        ax.set_ylabel(metric + (f" ({better})" if better else ""), fontsize=9)
        ax.set_title(title, loc="left", fontsize=10)
    from matplotlib.patches import Patch

    legend = [
        Patch(facecolor="#777777", alpha=0.35, hatch="//", edgecolor="white", label="seen (sample of train)"),
        Patch(facecolor="#777777", label="held-out (never trained on)"),
    ]
    fig.legend(handles=legend, loc="outside lower center", ncols=2, frameon=False)
    fig.suptitle("Primary metric: held-out vs seen", x=0.01, ha="left", fontsize=11)
    return Plot(
        "plot-held-out-vs-seen", "primary metric on held-out and seen examples per task", png_bytes(fig)
    )


def deploy_plot_id(table: DeployTable) -> str:
    """The element id of a (model, task)'s deployment plot (the page places it by this id)."""
    return f"plot-deploy-{_slug(f'{table.task}-{table.model}')}"


def plot_deploy(table: DeployTable, colors: Mapping[str, str]) -> Plot | None:
    """Held-out metric of each deployment variant against its size on disk, against its
    latency per example and, where llama-bench timed the GGUF files, against llama.cpp's
    generation tokens/s; each case's own score (the unmerged adapter) is a dashed line in its
    color, and its own latency a hollow point. None when no variant has a score."""
    variants = [p for p in table.points if p.variant is not None and p.metric is not None]
    if not variants:
        return None
    timed = any(p.generation_tps is not None for p in variants)  # llama-bench ran on a GGUF file
    fig = new_figure(15.0 if timed else 10.5, 4.2)
    axes = fig.subplots(1, 3 if timed else 2, sharey=True)
    size_ax, latency_ax = axes[0], axes[1]
    for ax in axes:
        style_axes(ax)
    for case in (p for p in table.points if p.variant is None and p.metric is not None):
        color = colors.get(case.method, BASE_COLOR)
        for ax in axes:
            ax.axhline(case.metric, color=color, linestyle="--", linewidth=1.1, zorder=1)
        if case.latency_ms is not None:
            latency_ax.plot(case.latency_ms, case.metric, "o", markerfacecolor="white", color=color, zorder=3)
            latency_ax.annotate(
                f"{case.method} (adapter)", (case.latency_ms, case.metric), xytext=(6, 4),
                textcoords="offset points", fontsize=7.5, color="#444444",
            )  # fmt: skip
    for point in variants:
        color = colors.get(point.method, BASE_COLOR)
        label = f"{point.method}@{point.variant}"
        for ax, x in ((size_ax, point.size_bytes), (latency_ax, point.latency_ms)):
            if x is None:
                continue
            x = x / dict(BINARY_UNITS)["MiB"] if ax is size_ax else x
            ax.plot(x, point.metric, "o", color=color, markeredgecolor="white", zorder=3)
            ax.annotate(label, (x, point.metric), xytext=(6, 4), textcoords="offset points", fontsize=7.5)
        if timed and point.generation_tps is not None:
            at = (point.generation_tps, point.metric)
            axes[2].plot(*at, "o", color=color, markeredgecolor="white", zorder=3)
            axes[2].annotate(label, at, xytext=(6, 4), textcoords="offset points", fontsize=7.5)
    if timed:
        axes[2].set_xlabel("llama.cpp generation tokens/s (llama-bench; higher is faster)")
    from matplotlib.ticker import FuncFormatter

    size_ax.set_xscale("log")
    for axis in (size_ax.xaxis.set_major_formatter, size_ax.xaxis.set_minor_formatter):
        axis(FuncFormatter(lambda value, _: f"{value:g}"))  # 200, not 2 x 10^2
    size_ax.set_xlabel("size on disk (MiB, log scale)")
    latency_ax.set_xlabel("latency per example (ms)")
    better = direction_words(table.metric)
    size_ax.set_ylabel(f"held-out {table.metric}" + (f" ({better})" if better else ""))
    fig.suptitle(
        f"{table.title}: deployment variants (dashed: the unmerged adapter)", x=0.01, ha="left", fontsize=11
    )
    return Plot(
        deploy_plot_id(table),
        f"{table.title}: each deployment variant's score against size on disk and latency",
        png_bytes(fig),
    )


def draw_plots(run: Run) -> dict[str, list[Plot]]:
    """Every figure of the page, by section; sections without data have no plot."""
    groups = group_rows(run.records)
    all_rows = every_row(groups)
    colors = method_colors(all_rows)
    page = _Page(groups, {key: group_title(*key, groups) for key in groups}, colors)
    pareto = [plot_pareto(m, t, rows, colors, page.titles[(m, t)]) for (m, t), rows in groups.items()]
    sections = {
        "pareto": pareto,
        "cost": [plot_train_time(page), plot_adapter_size(all_rows, colors)],
        "loss": [plot_loss_curves(page)],
        "generalization": [plot_held_out_vs_seen(page)],
        "deploy": [plot_deploy(table, colors) for table in deploy_tables(run.records)],
    }
    return {name: [p for p in plots if p is not None] for name, plots in sections.items()}
