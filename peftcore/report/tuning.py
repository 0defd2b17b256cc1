"""The search in the report: per task, each method's trials against the searched value, and the
methods at their own values beside the values the search chose.

For each (model, task) with tuned runs (profile ``tune:``), a plot and a table. The plot: for
each method, its trials' objective on the tuning split against the searched value (the learning
rate when it is searched, else the first searched key), ± one standard error where the trial
recorded one, the chosen value ringed; a trial the pruner stopped (``tune.pruner``) has no
objective, so it is an "x" along the bottom at its value. The table: per method, its own value
of that key (the default) and the chosen one with the rule that chose it, the held-out primary
metric at each (the default runs of ``tune.compare_default``; ± half its 95% interval, as the
summary tables write it), the method's rank among the searched methods at each, and what the
search cost: its trials (how many were pruned, how many failed) and their summed training time,
beside the tuned run's own.

Everything is read from records: the tuned runs' ``tuning`` block (every trial's values and
objective, the choice; :func:`peftcore.pipeline.tuning.record_block`), and the run's trials and
default runs, which :func:`peftcore.report.build.read_run` sets apart in ``Run.search`` so no
other table compares them. Markdown (:func:`tuning_md`), the page (:mod:`peftcore.report.html`)
and the plots (:func:`tuning_plots`) start from :func:`tuning_tables`, so they agree.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.report.canvas import method_colors, new_figure, panel_grid, png_bytes, style_axes
from peftcore.report.certainty import half_width
from peftcore.report.formats import DASH, fmt_metric_interval, fmt_seconds
from peftcore.report.plots import Plot, _slug
from peftcore.report.rows import (
    Row,
    Stat,
    direction_words,
    every_row,
    group_rows,
    group_title,
    primary_of,
    seeded,
)
from peftcore.results.store import Run
from peftcore.vocab.quantities import Quantity, higher_is_better
from peftcore.vocab.record import is_default_run, is_trial, pruned_at_step

LEARNING_RATE = "training.learning_rate"  # plotted when searched: what a search is above all about
TRAIN_SECONDS = Quantity("training", "train_seconds")
PRUNED_Y = 0.03  # where a pruned trial's marker sits, in axes units: just above the bottom spine
LEAD = (
    "Each trained method's search, scored on the tuning split (never on held-out examples): its "
    "trials' objective against the searched value, ± one standard error, the chosen value ringed. "
    "A trial the pruner stopped early (tune.pruner) has no objective: it is an x along the bottom "
    "at its value, the legend naming the step it stopped at; a trial that failed is not drawn. "
    "The table sets each method's own value (default) beside the chosen one, the held-out primary "
    "metric at each (± half its 95% interval; with tune.compare_default, the default runs use the "
    "tuned runs' seeds and examples), the method's rank among the searched methods at each, and the "
    "search's cost: its trials (how many were pruned, how many failed) and their summed training "
    "time, beside the tuned run's own."
)


@dataclass(frozen=True)
class TrialPoint:
    """One trial in the plot: the searched value, its objective and standard error."""

    x: float
    objective: float
    stderr: float | None
    chosen: bool


@dataclass(frozen=True)
class PrunedPoint:
    """A trial the pruner stopped: its searched value and the step it stopped at (no objective)."""

    x: float
    at_step: int


@dataclass(frozen=True)
class MethodSearch:
    """One method's trials against one searched key, as its tuned run's record lists them."""

    method: str
    key: str  # the plotted key, e.g. training.learning_rate
    log: bool  # the key's space is on a log scale
    points: list[TrialPoint]  # the trials with an objective
    pruned: list[PrunedPoint]  # the trials the pruner stopped (a failed trial is in neither list)


@dataclass(frozen=True)
class TrialCount:
    """How many trials a method's search has, and how many of them were pruned or failed."""

    total: int
    pruned: int  # finished early, stopped by tune.pruner: no objective, never chosen
    failed: int  # did not finish (failed, oom, cancelled; or missing when its tuned run chose)

    @classmethod
    def of(cls, outcomes: Sequence[tuple[Any, Any]]) -> TrialCount:
        """From each trial's ``(status, pruned_at_step)``."""
        kinds = [_outcome(status, step) for status, step in outcomes]
        return cls(len(kinds), kinds.count("pruned"), kinds.count("failed"))

    def cell(self) -> str:
        """``8``, ``8 (3 pruned)``, ``8 (3 pruned, 1 failed)``; a dash when there are none."""
        if not self.total:
            return DASH
        parts = [f"{n} {word}" for n, word in ((self.pruned, "pruned"), (self.failed, "failed")) if n]
        return f"{self.total} ({', '.join(parts)})" if parts else str(self.total)


@dataclass(frozen=True)
class TuningTable:
    """One (model, task): its rows as text, and each method's trials for the plot."""

    model: str
    task: str
    title: str
    note: str
    header: list[str]
    right: list[bool]
    rows: list[list[str]]
    searches: list[MethodSearch]
    objective_words: str  # the y axis: the objective, its split and direction
    notes: list[str]  # why each method's value was chosen, as its tuned record says

    @property
    def plot_id(self) -> str:
        return f"plot-tuning-{_slug(f'{self.task}-{self.model}')}"


# --------------------------------------------------------------------------- reading records


def _block(record: Mapping[str, Any]) -> Mapping[str, Any]:
    tuning = record.get("tuning")
    return tuning if isinstance(tuning, Mapping) else {}


def _is_tuned(record: Mapping[str, Any]) -> bool:
    return _block(record).get("kind") == "tuned"


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _search_spec(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """The resolved ``tune:`` block the case ran under (its spec's ``tuning.search``)."""
    tuning = (record.get("spec") or {}).get("tuning") or {}
    search = tuning.get("search") if isinstance(tuning, Mapping) else None
    return search if isinstance(search, Mapping) else {}


def plotted_key(block: Mapping[str, Any]) -> str | None:
    """The key a method's trials are plotted against: the learning rate when searched, else the
    first searched key (in the order the choice lists it)."""
    keys = list(block.get("chosen") or {})
    keys = keys or [k for trial in block.get("trials") or () for k in trial.get("values") or {}]
    if not keys:
        return None
    return LEARNING_RATE if LEARNING_RATE in keys else keys[0]


def _log_scale(record: Mapping[str, Any], key: str, xs: Sequence[float]) -> bool:
    """As the search's space says (a range is log-spaced unless ``log: false``); a log axis
    needs every value above 0."""
    space = (_search_spec(record).get("search") or {}).get(key)
    log = space.get("log", True) if isinstance(space, Mapping) else key == LEARNING_RATE
    return bool(log) and all(x > 0 for x in xs)


def _outcome(status: Any, step: Any) -> str:
    """``pruned`` (finished, stopped by the pruner at ``step``), ``finished`` or ``failed``: a
    trial that did not finish is never counted as pruned, whatever its pruning block says."""
    if status != "finished":
        return "failed"
    return "finished" if step is None else "pruned"


def method_search(record: Mapping[str, Any]) -> MethodSearch | None:
    """A tuned run's trials against its plotted key: those with an objective as points, those the
    pruner stopped (they have none) apart, those that failed left out. None when no trial has an
    objective."""
    block = _block(record)
    key = plotted_key(block)
    if key is None:
        return None
    chosen = block.get("chosen_trial")
    points: list[TrialPoint] = []
    pruned: list[PrunedPoint] = []
    for trial in block.get("trials") or ():
        x, y = _number((trial.get("values") or {}).get(key)), _number(trial.get("value"))
        if x is None:
            continue
        step = trial.get("pruned_at_step")
        if _outcome(trial.get("status"), step) == "pruned":
            pruned.append(PrunedPoint(x, int(step)))
        elif y is not None:
            points.append(TrialPoint(x, y, _number(trial.get("stderr")), trial.get("case_id") == chosen))
    if not points:
        return None
    points.sort(key=lambda p: p.x)
    pruned.sort(key=lambda p: p.x)
    log = _log_scale(record, key, [p.x for p in points] + [p.x for p in pruned])
    return MethodSearch(str(record["method"]), key, log, points, pruned)


def own_value(tuned: Mapping[str, Any], default: Mapping[str, Any] | None, key: str) -> float | None:
    """The method's own value of ``key``: the records' ``defaults`` (the tuned run's, else the
    default run's), else the default run's spec, else the method file's own ``training:``."""
    for record in (tuned, default):
        if record is not None:
            value = _number((_block(record).get("defaults") or {}).get(key))
            if value is not None:
                return value
    section, _, name = key.partition(".")
    spec = (default or {}).get("spec") or {}
    if section == "training":
        found = _number((spec.get("training") or {}).get(name))
        if found is not None:
            return found
        return _number((((tuned.get("spec") or {}).get("method") or {}).get("training") or {}).get(name))
    return _number(((spec.get("method") or {}).get("adapter") or {}).get(name))


# --------------------------------------------------------------------------- tables


def _fmt_key_value(value: float | None) -> str:
    return DASH if value is None else f"{value:g}"


def ranks(rows: Iterable[Row], quantity: Quantity) -> dict[str, int]:
    """Each method's rank by its mean of ``quantity`` (1: the best by the metric's direction; a
    tie shares the better rank); empty when the metric declares no direction."""
    direction = higher_is_better(quantity.name)
    if direction is None:
        return {}
    means = {r.method: s.mean for r in rows if (s := r.stat(quantity)) is not None and not math.isnan(s.mean)}
    sign = -1.0 if direction else 1.0
    ordered = sorted(sign * v for v in means.values())
    return {method: ordered.index(sign * value) + 1 for method, value in means.items()}


def _rank_cell(rank: Mapping[str, int], method: str) -> str:
    return f"{rank[method]} of {len(rank)}" if method in rank else DASH


def _search_cost(
    trials: Sequence[Mapping[str, Any]], block: Mapping[str, Any]
) -> tuple[TrialCount, float | None]:
    """A tuned run's trials counted, and their summed training seconds: from the study's trial
    records in the run, else (none of them there) from the list its ``block`` keeps, which has
    no time."""
    mine = [t for t in trials if _block(t).get("study") == block.get("study")]
    if not mine:
        rows = block.get("trials") or ()
        return TrialCount.of([(row.get("status"), row.get("pruned_at_step")) for row in rows]), None
    seconds = [s for t in mine if (s := TRAIN_SECONDS.value(t)) is not None]
    count = TrialCount.of([(t.get("status"), pruned_at_step(t)) for t in mine])
    return count, (sum(seconds) if seconds else None)


def _objective_words(tuned: Sequence[Row]) -> str:
    """``tuning-split brier_score (minimize: lower is better)`` from the first tuned record."""
    objective = _block(tuned[0].records[0]).get("objective") or {}
    metric, way = objective.get("metric", "objective"), objective.get("direction")
    better = {"minimize": "lower is better", "maximize": "higher is better"}.get(str(way))
    return f"tuning-split {metric}" + (f" ({way}: {better})" if better else "")


def tuning_tables(run: Run) -> list[TuningTable]:
    """A table per (model, task) with a tuned run, its methods in the report's order."""
    groups = group_rows(run.records)
    defaults = group_rows(r for r in run.search if is_default_run(r))
    trials = [r for r in run.search if is_trial(r)]
    tables = []
    for (model, task), rows in groups.items():
        tuned = [row for row in rows if _is_tuned(row.records[0])]
        if not tuned:
            continue
        default_rows = {row.method: row for row in defaults.get((model, task), [])}
        metric = primary_of(tuned)
        quality = Quantity("held_out", metric) if metric else None
        tuned_rank = ranks(tuned, quality) if quality else {}
        default_rank = ranks(default_rows.values(), quality) if quality else {}
        over_seeds = seeded([*tuned, *default_rows.values()])
        searches = [s for s in (method_search(row.records[0]) for row in tuned) if s is not None]
        keys = list(dict.fromkeys(plotted_key(_block(row.records[0])) for row in tuned))
        one_key = keys[0] if len(keys) == 1 and keys[0] else None
        shown = f" {one_key.partition('.')[2]}" if one_key else " value"
        header = ["Method", f"Default{shown}", f"Chosen{shown}", "Choice"]
        if default_rows:
            header.append(f"Held-out {metric} at default")
        header.append(f"Held-out {metric} tuned")
        if default_rows:
            header.append("Rank at default")
        header += ["Rank tuned", "Trials", "Trials' train time", "Tuned run's train time"]
        columns = _Columns(default_rows, trials, quality, over_seeds, default_rank, tuned_rank, one_key)
        body = [columns.cells(row) for row in tuned]
        better = direction_words(metric) if metric else None
        note = f"Model {model}" + (f"; held-out {metric} ({better or 'direction unknown'})" if metric else "")
        tables.append(
            TuningTable(
                model=model,
                task=task,
                title=group_title(model, task, groups),
                note=note + ("" if default_rows else "; no default runs (set tune.compare_default)") + ".",
                header=header,
                right=[False, True, True, False] + [True] * (len(header) - 4),
                rows=body,
                searches=searches,
                objective_words=_objective_words(tuned),
                notes=[f"{row.method}: {why}" for row in tuned if (why := _block(row.records[0]).get("why"))],
            )
        )
    return tables


@dataclass(frozen=True)
class _Columns:
    """What a (model, task)'s rows are written with: its default runs, trials and ranks."""

    default_rows: Mapping[str, Row]  # method -> its default runs (none without compare_default)
    trials: Sequence[Mapping[str, Any]]  # the run's trial records
    quality: Quantity | None  # the held-out primary metric
    over_seeds: bool
    default_rank: Mapping[str, int]
    tuned_rank: Mapping[str, int]
    one_key: str | None  # the key every method's plot shows (the header names it), else None

    def cells(self, row: Row) -> list[str]:
        """Method, default and chosen value, choice, held-out (at default,) tuned, rank (at
        default,) tuned, trials, their time, the tuned run's time."""
        record = row.records[0]
        block = _block(record)
        default = self.default_rows.get(row.method)
        key = plotted_key(block)
        own = own_value(record, default.records[0] if default else None, key) if key else None
        chosen = _number((block.get("chosen") or {}).get(key)) if key else None
        label = "" if self.one_key or key is None else f"{key.partition('.')[2]} "
        count, seconds = _search_cost(self.trials, block)
        time = row.stat(TRAIN_SECONDS)
        at_default = bool(self.default_rows)
        return [
            row.method,
            label + _fmt_key_value(own),
            label + _fmt_key_value(chosen),
            str(_search_spec(record).get("choose") or DASH),
            *([self._quality(default)] if at_default else []),
            self._quality(row),
            *([_rank_cell(self.default_rank, row.method)] if at_default else []),
            _rank_cell(self.tuned_rank, row.method),
            count.cell(),
            fmt_seconds(Stat(seconds, None, 1)) if seconds is not None else DASH,
            fmt_seconds(time) if time is not None else DASH,
        ]

    def _quality(self, row: Row | None) -> str:
        stat = row.stat(self.quality) if row is not None and self.quality is not None else None
        if row is None or stat is None or self.quality is None:
            return DASH
        return fmt_metric_interval(stat, half_width(row, self.quality), over_seeds=self.over_seeds)


# --------------------------------------------------------------------------- markdown


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def tuning_md(run: Run) -> list[str]:
    """summary.md's section (its lines), or nothing when the run has no tuned run."""
    tables = tuning_tables(run)
    if not tables:
        return []
    lines = ["## Tuning", "", LEAD, ""]
    for table in tables:
        lines += [f"### {table.title}", "", table.note, ""]
        lines.append("| " + " | ".join(_md(h) for h in table.header) + " |")
        lines.append("|" + "|".join("---:" if r else "---" for r in table.right) + "|")
        lines += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in table.rows]
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
        lines += [""] if table.notes else []
    return lines


# --------------------------------------------------------------------------- plots


def tuning_plots(run: Run) -> list[Plot]:
    """One plot per (model, task) whose tuned runs list a trial with an objective."""
    colors = method_colors(every_row(group_rows(run.records)))
    plots = [plot_search(table, colors) for table in tuning_tables(run)]
    return [p for p in plots if p is not None]


def plot_search(table: TuningTable, colors: Mapping[str, str]) -> Plot | None:
    """:func:`search_figure` as the page's PNG; None when no method has a trial to plot."""
    fig = search_figure(table, colors)
    if fig is None:
        return None
    pruned = any(s.pruned for s in table.searches)
    alt = f"{table.title}: each method's trials, {table.objective_words} against the searched value"
    alt += "; pruned trials as an x along the bottom" if pruned else ""
    return Plot(table.plot_id, alt, png_bytes(fig))


def search_figure(table: TuningTable, colors: Mapping[str, str]) -> Any | None:
    """Each method's trials: objective (y) against the searched value (x), a panel per searched
    key (one unless methods search different keys), the chosen trial ringed, each pruned trial
    an "x" along the bottom at its value. A matplotlib Figure; None without searches."""
    if not table.searches:
        return None
    keys = list(dict.fromkeys(s.key for s in table.searches))
    if len(keys) == 1:
        fig = new_figure(8.6, 4.5)
        axes = [fig.add_subplot()]
    else:
        fig, axes = panel_grid(len(keys))
    for ax, key in zip(axes, keys, strict=True):
        style_axes(ax)
        searches = [s for s in table.searches if s.key == key]
        for search in searches:
            _draw_search(ax, search, colors.get(search.method, "#555555"))
        if all(s.log for s in searches):
            ax.set_xscale("log")
        if any(s.pruned for s in searches):
            ax.margins(y=0.15)  # room along the bottom, so no trial's point hides a pruned one's x
        ax.set_xlabel(key.partition(".")[2] + (" (log scale)" if all(s.log for s in searches) else ""))
        ax.set_ylabel(table.objective_words, fontsize=9)
    axes[0].set_title(f"{table.title}: the search, trial by trial", loc="left", fontsize=11)
    fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    return fig


def _draw_search(ax: Any, search: MethodSearch, color: str) -> None:
    xs, ys = [p.x for p in search.points], [p.objective for p in search.points]
    ax.plot(xs, ys, "-", color=color, linewidth=1.2, alpha=0.8, zorder=2)
    with_error = [p for p in search.points if p.stderr is not None]
    if with_error:
        ax.errorbar(
            [p.x for p in with_error],
            [p.objective for p in with_error],
            yerr=[p.stderr for p in with_error],
            fmt="none",
            ecolor=color,
            capsize=3,
            linewidth=1.0,
            zorder=2,
        )
    ax.scatter(xs, ys, s=36, color=color, edgecolors="white", linewidths=0.8, zorder=3, label=search.method)
    for point in (p for p in search.points if p.chosen):
        ax.scatter(
            [point.x],
            [point.objective],
            s=170,
            facecolors="none",
            edgecolors=color,
            linewidths=1.8,
            zorder=4,
            label=f"{search.method}: chosen {point.x:g}",
        )
    if search.pruned:
        steps = sorted({p.at_step for p in search.pruned})
        words = f"step {steps[0]}" if len(steps) == 1 else "steps " + ", ".join(map(str, steps))
        # A pruned trial has no objective to stand at: x in data units and y in axes units put it
        # along the bottom at its value. A line, not a scatter: in this blended transform a line
        # still widens the x axis to its values, a scatter's collection would not.
        ax.plot(
            [p.x for p in search.pruned],
            [PRUNED_Y] * len(search.pruned),
            linestyle="none",
            marker="x",
            markersize=8,
            markeredgewidth=1.8,
            color=color,
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            zorder=4,
            label=f"{search.method}: pruned at {words}",
        )
