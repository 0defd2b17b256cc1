"""The metric registry: every built-in metric by the name task specs use, with its direction.

``METRICS`` maps a name to a :class:`Metric`; ``register`` adds a function under a name and
rejects a name given twice. The metric functions register themselves from their own modules
(``text_metrics``, ``number_metrics``, ...); :mod:`peftcore.score.metrics` imports them all, so
the registry is complete once that module is imported. This module imports nothing of them,
which is what lets them import ``register`` from here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from peftcore.errors import PeftcoreError

MetricInputs = Literal["texts", "indices", "choice_loglikelihoods", "nll", "judge"]

# What each task type's evaluator gives its metrics (judged metrics come from generated answers).
TASK_INPUTS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("indices", "choice_loglikelihoods"),
    "classification": ("indices", "choice_loglikelihoods"),
    "generation": ("texts", "judge"),
    "language_modeling": ("nll",),
}


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float] | None
    higher_is_better: bool
    description: str
    inputs: MetricInputs = "texts"

    def __call__(self, *args: Any) -> float:
        if self.fn is None:
            raise PeftcoreError(f"metric {self.name!r} is not computed from predictions ({self.inputs})")
        return self.fn(*args)


class MetricError(PeftcoreError):
    """A metric name cannot be resolved, or an `evaluate` metric returned something unusable."""


METRICS: dict[str, Metric] = {}


def register(
    name: str, *, higher_is_better: bool, description: str, inputs: MetricInputs = "texts"
) -> Callable[[Any], Any]:
    """Decorator adding ``fn`` to ``METRICS`` as ``name``; ``ValueError`` if the name is taken."""

    def decorate(fn: Any) -> Any:
        add_metric(Metric(name, fn, higher_is_better, description, inputs))
        return fn

    return decorate


def add_metric(metric: Metric) -> None:
    """Add ``metric`` to ``METRICS``; ``ValueError`` if its name is taken."""
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} registered twice")
    METRICS[metric.name] = metric
