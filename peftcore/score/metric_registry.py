"""The metric registry: every built-in metric's function, under the name task specs use.

``METRICS`` maps a name to a :class:`Metric`; ``register`` adds a function under a name that
:mod:`peftcore.vocab.metrics` declares (its direction, inputs and kind of uncertainty are
declared there, once, for every layer to read) and rejects a name given twice or not declared.
A metric that is a mean over examples also registers the function giving each example's score
(``per_example``): scoring keeps those scores, so the metric's standard error and paired
comparisons between cases come from them (:mod:`peftcore.stats`). The metric functions register
themselves from their own modules (``text_metrics``, ``number_metrics``, ...);
:mod:`peftcore.score.metrics` imports them all, so the registry is complete once that module is
imported. This module imports nothing of them, which is what lets them import ``register`` from
here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.errors import PeftcoreError
from peftcore.vocab.metrics import BUILT_IN_METRICS, MetricInputs


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float] | None
    higher_is_better: bool
    description: str
    inputs: MetricInputs = "texts"
    # Each example's score, the metric being their mean (nan: an example the metric leaves out,
    # e.g. abs_diff's answers without a number). None: a corpus-level metric (macro F1, perplexity).
    per_example: Callable[..., Sequence[float]] | None = None

    def __call__(self, *args: Any) -> float:
        if self.fn is None:
            raise PeftcoreError(f"metric {self.name!r} is not computed from predictions ({self.inputs})")
        return self.fn(*args)

    def evaluate(self, *args: Any) -> tuple[float, list[float] | None]:
        """The metric's value and, for a mean over examples, each example's score (computed
        once: the value is their mean over the examples scored, nan when none is)."""
        if self.per_example is None:
            return float(self(*args)), None
        scores = [float(s) for s in self.per_example(*args)]
        kept = [s for s in scores if not math.isnan(s)]
        return (math.fsum(kept) / len(kept) if kept else math.nan), scores


class MetricError(PeftcoreError):
    """A metric name cannot be resolved, or an `evaluate` metric returned something unusable."""


METRICS: dict[str, Metric] = {}


def built_in(
    name: str,
    fn: Callable[..., float] | None,
    description: str,
    per_example: Callable[..., Sequence[float]] | None = None,
) -> Metric:
    """The :class:`Metric` of a name :mod:`peftcore.vocab.metrics` declares, computed by ``fn``.

    ``ValueError`` for a name not declared there, or per-example scores that disagree with the
    declared uncertainty (a ``"mean"`` metric has them, any other has none).
    """
    info = BUILT_IN_METRICS.get(name)
    if info is None:
        raise ValueError(f"metric {name!r} is not declared in peftcore.vocab.metrics.BUILT_IN_METRICS")
    if (per_example is not None) != (info.uncertainty == "mean"):
        raise ValueError(
            f"metric {name!r} is declared with uncertainty {info.uncertainty!r}, so it "
            + ("needs" if info.uncertainty == "mean" else "takes no")
            + " per-example scores"
        )
    return Metric(name, fn, info.higher_is_better, description, info.inputs, per_example)


def register(
    name: str, *, description: str, per_example: Callable[..., Sequence[float]] | None = None
) -> Callable[[Any], Any]:
    """Decorator adding ``fn`` to ``METRICS`` as ``name`` (with its per-example scores, for a
    mean); ``ValueError`` if the name is taken or not declared (see :func:`built_in`)."""

    def decorate(fn: Any) -> Any:
        add_metric(built_in(name, fn, description, per_example))
        return fn

    return decorate


def add_metric(metric: Metric) -> None:
    """Add ``metric`` to ``METRICS``; ``ValueError`` if its name is taken."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} registered twice")
    METRICS[metric.name] = metric
