"""The numbers of a case record: their names, where a record keeps them, and how they are written.

Pure functions over records (see :mod:`peftcore.results.store`), shared by specs (``expect:`` and
``compare:`` name quantities), the gates (:mod:`peftcore.gates.bounds`, :mod:`peftcore.gates.rules`),
the baseline comparison (:mod:`peftcore.gates.baseline`) and the report.

Names of quantities, shared by ``expect:``, ``compare:`` and ``--metric-compare-fail``::

    accuracy, f1, ...            held-out metric (metrics.held_out.<name>)
    seen.accuracy                the same metric on the seen sample (metrics.seen.<name>)
    primary, seen.primary        the task's first metric (spec.task.metrics[0])
    peak_memory_bytes, ...       a cost figure; bare names are looked up in training, then
                                 inference, then base_model (peak_memory_bytes = training's)
    inference.peak_memory_bytes  a cost figure of one block, written out
    forgetting                   general_text.forgetting (profile eval.forgetting), lower is better
    ood.nq_open.f1               a metric of another task the case is also scored on
    ood.nq_open.primary          (profile eval.also_score: metrics["ood.nq_open"]), its first metric

Directions (is higher better?) are declared once: with each metric's name
(:mod:`peftcore.vocab.metrics`) and on each figure of the record (:mod:`peftcore.vocab.record`);
:func:`higher_is_better` answers for both.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from peftcore.errors import suggest
from peftcore.units import format_bytes
from peftcore.vocab.metrics import BUILT_IN_METRICS
from peftcore.vocab.record import (
    FIGURES,
    METRIC_BLOCKS,
    OOD_PREFIX,
    figure_direction,
    is_figure,
    primary_metric,
    task_metrics,
)

# The numeric figures each cost block of a record carries (see peftcore.vocab.record).
RECORD_FIGURES: dict[str, tuple[str, ...]] = {block: tuple(names) for block, names in FIGURES.items()}
RELATIVE_SLACK = 1e-9  # so that 0.40 - 0.38 is not "more than 0.02" in binary floating point


# --------------------------------------------------------------------------- quantities


def higher_is_better(name: str) -> bool | None:
    """Direction of a metric or cost figure by name; None when unknown or a figure without one."""
    if name in BUILT_IN_METRICS:
        return BUILT_IN_METRICS[name].higher_is_better
    return figure_direction(name)


@dataclass(frozen=True)
class Quantity:
    """One number of a record: a metric of a split, or a figure of a cost block."""

    block: str  # held_out | seen | ood.<task> | training | inference | base_model | general_text
    name: str  # metric or figure name; "primary" until resolved against a record

    @property
    def is_metric(self) -> bool:
        return self.block in METRIC_BLOCKS or self.ood_task is not None

    @property
    def ood_task(self) -> str | None:
        """The other task of an out-of-distribution metric (``ood.<task>``), else None."""
        return self.block[len(OOD_PREFIX) :] if self.block.startswith(OOD_PREFIX) else None

    @property
    def label(self) -> str:
        """How the name is written: ``f1``, ``seen.f1``, ``training.peak_memory_bytes``."""
        return self.name if self.block == "held_out" else f"{self.block}.{self.name}"

    @property
    def words(self) -> str:
        """How a message says it: ``held-out f1``, ``training peak_memory_bytes``."""
        if self.ood_task is not None:
            return f"out-of-distribution {self.ood_task} {self.name}"
        return f"{self.block.replace('_', '-')} {self.name}"

    def resolve(self, record: Mapping[str, Any]) -> Quantity:
        if self.name != "primary":
            return self
        name = primary_metric(record) if self.ood_task is None else ood_primary(record, self.ood_task)
        return Quantity(self.block, name) if name else self

    def value(self, record: Mapping[str, Any]) -> float | None:
        """The number in ``record``, or None when the record does not carry it."""
        q = self.resolve(record)
        if q.is_metric:
            source = (record.get("metrics") or {}).get(q.block) or {}
        else:
            source = record.get(q.block) or {}
        value = source.get(q.name) if isinstance(source, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def applies_to(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` should carry this number at all: its task scores the metric, or it
        has the cost block (the untrained ``base`` method has no ``training`` block)."""
        q = self.resolve(record)
        if q.ood_task is not None:  # the case was to be scored on that task (not its own)
            return q.ood_task in ((record.get("spec") or {}).get("also_score") or {}) or q.name in (
                (record.get("metrics") or {}).get(q.block) or {}
            )
        if q.is_metric:
            return q.name in task_metrics(record) or q.name in _split_metrics(record, METRIC_BLOCKS)
        return isinstance(record.get(q.block), Mapping)

    def higher_is_better(self, record: Mapping[str, Any] | None = None) -> bool | None:
        q = self.resolve(record) if record is not None else self
        return higher_is_better(q.name)


def parse_quantity(text: str, known_metrics: Collection[str] = (), *, lenient: bool = False) -> Quantity:
    """``"seen.f1"`` -> Quantity("seen", "f1"). ValueError says what is wrong with the name.

    A bare name that is neither a cost figure nor a metric (registered or in ``known_metrics``)
    is an error, unless ``lenient`` (then it is taken to be a metric, checked later).
    """
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", text):
        raise ValueError(f"{text!r} is not a metric or figure name")
    metrics = {*BUILT_IN_METRICS, *known_metrics, "primary"}
    head, _, tail = text.partition(".")
    if head == "ood":
        task, _, metric = tail.partition(".")
        if not task or not metric:
            raise ValueError(f"{text!r}: expected ood.<task>.<metric>, e.g. ood.nq_open.f1")
        if is_figure(metric):
            raise ValueError(f"{metric!r} is a cost figure, not a metric of task {task!r}")
        if metric not in metrics and not lenient:
            raise ValueError(f"unknown metric {metric!r}; " + suggest(metric, metrics))
        return Quantity(OOD_PREFIX + task, metric)
    if tail:
        if head in METRIC_BLOCKS:
            if is_figure(tail):
                raise ValueError(f"{tail!r} is a cost figure, not a metric of the {head} split")
            if tail not in metrics and not lenient:
                raise ValueError(f"unknown metric {tail!r}; " + suggest(tail, metrics))
            return Quantity(head, tail)
        if head in RECORD_FIGURES:
            if tail not in RECORD_FIGURES[head]:
                raise ValueError(f"{head} has no figure {tail!r}; " + suggest(tail, RECORD_FIGURES[head]))
            return Quantity(head, tail)
        raise ValueError(
            f"unknown prefix {head!r} in {text!r}; expected seen., held_out., ood.<task>., training., ..."
        )
    for block, names in RECORD_FIGURES.items():
        if text in names:
            return Quantity(block, text)
    if text in metrics or lenient:
        return Quantity("held_out", text)
    figures = {name for names in RECORD_FIGURES.values() for name in names}
    raise ValueError(f"unknown metric or cost figure {text!r}; " + suggest(text, metrics | figures))


def metric_names(record: Mapping[str, Any], split: str) -> tuple[str, ...]:
    """The metrics of ``split`` a record speaks of: its task's declared ones, then those it reports
    (a name can appear twice)."""
    return (*task_metrics(record), *((record.get("metrics") or {}).get(split) or {}))


def reported_metrics(record: Mapping[str, Any]) -> set[str]:
    """Every metric name the record reports, in its own splits and on out-of-distribution tasks."""
    blocks = [b for b in (record.get("metrics") or {}) if b in METRIC_BLOCKS or b.startswith(OOD_PREFIX)]
    return _split_metrics(record, blocks)


def _split_metrics(record: Mapping[str, Any], blocks: Collection[str]) -> set[str]:
    metrics = record.get("metrics") or {}
    return {name for block in blocks for name in (metrics.get(block) or {})}


def ood_tasks(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The other tasks a record was scored on (out of distribution), in the order it lists them."""
    return tuple(b[len(OOD_PREFIX) :] for b in (record.get("metrics") or {}) if b.startswith(OOD_PREFIX))


def ood_primary(record: Mapping[str, Any], task: str) -> str | None:
    """The first metric of ``task`` as the record's spec declares it (``also_score``), else the
    first the record reports for it."""
    spec = ((record.get("spec") or {}).get("also_score") or {}).get(task) or {}
    declared = spec.get("metrics") if isinstance(spec, Mapping) else None
    if isinstance(declared, (list, tuple)) and declared:
        return str(declared[0])
    return next(iter((record.get("metrics") or {}).get(OOD_PREFIX + task) or {}), None)


def format_value(quantity: Quantity | str, value: float | None) -> str:
    name = quantity.name if isinstance(quantity, Quantity) else quantity
    if value is None:
        return "n/a"
    if name.endswith("_bytes") and math.isfinite(value):
        return format_bytes(value)
    if name.endswith("_params") and math.isfinite(value):
        return f"{value:,.0f}"
    return f"{value:.4g}"


# --------------------------------------------------------------------------- tolerances


@dataclass(frozen=True)
class Tolerance:
    """How far a value may move: ``0.02`` (absolute) or ``2%`` (relative to the reference)."""

    value: float
    relative: bool

    def allowed(self, reference: float) -> float:
        return self.value / 100 * abs(reference) if self.relative else self.value

    def limit(self, reference: float) -> float:
        """``allowed`` with room for binary rounding, so a move of exactly the tolerance is within it."""
        return self.allowed(reference) * (1 + RELATIVE_SLACK) + 1e-12

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def parse_tolerance(text: Any) -> Tolerance:
    """``"2%"`` -> relative 2 %, ``0.02`` or ``"0.02"`` -> absolute; ValueError otherwise."""
    raw = str(text).strip() if isinstance(text, (str, int, float)) and not isinstance(text, bool) else None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?\s*(%?)", raw or "")
    if not match:
        raise ValueError(f"expected a non-negative number like 0.02 or a percentage like 2%, got {text!r}")
    number = float(match.group(1) + (f"e{match.group(2)}" if match.group(2) else ""))
    return Tolerance(number, relative=bool(match.group(3)))
