"""What an evaluator is: what one scoring call gives it, what its inference phase hands to its
metric phase, and which metrics it can feed.

An evaluator works in two phases, so that only the model's work is timed and measured:
``infer(run, examples) -> RawOutputs`` runs the model, ``finish(run, examples, raw)`` turns
what it gave into metrics, per-example predictions and per-example scores
(:class:`ExampleScores`, what the metrics' uncertainty is computed from).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from peftcore.data.example import Example
from peftcore.score.metrics import resolve_metric
from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    from peftcore.spec import EvalSettings, TaskSpec


@dataclass(frozen=True)
class ScoringRun:
    """One scoring call: the model, how its examples become tokens, the task and settings, the
    device, and ``max_length``, the most tokens one forward pass may see."""

    model: Any
    fmt: PromptFormat
    task: TaskSpec
    settings: EvalSettings
    device: str
    max_length: int


@dataclass
class RawOutputs:
    """What an evaluator's inference phase hands to its metric phase: one value per example,
    and figures about the inference (padding, tokens) for ``ScoreResult.inference``."""

    values: list[Any]
    stats: dict[str, Any]


Metrics = dict[str, float]
Predictions = list[dict[str, Any]]


@dataclass
class ExampleScores:
    """Every example of a scored split, by uid: each mean metric's per-example scores (the
    metric is their mean; nan where the metric leaves an example out), and for a corpus-level
    metric the per-example inputs it is recomputed from on a resample (``macro_f1``:
    ``predicted`` and ``gold`` labels; ``perplexity``: ``nll`` and ``tokens`` per document).
    JSON-ready via :meth:`to_dict`."""

    uids: list[str]
    scores: dict[str, list[float]] = field(default_factory=dict)
    corpus: dict[str, dict[str, list[Any]]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"uid": self.uids, "scores": self.scores, "corpus": self.corpus}


@dataclass(frozen=True)
class Evaluator:
    gives: tuple[str, ...]  # what its metrics may take (peftcore.score.metrics.Metric.inputs)
    extra: tuple[str, ...]  # metrics it reports besides the task's
    infer: Callable[[ScoringRun, Sequence[Example]], RawOutputs]
    finish: Callable[[ScoringRun, Sequence[Example], RawOutputs], tuple[Metrics, Predictions, ExampleScores]]


def evaluate_metrics(
    names: Sequence[str], inputs: Callable[[str], tuple[Any, ...]], examples: Sequence[Example]
) -> tuple[Metrics, ExampleScores]:
    """Each metric of ``names`` on the arguments ``inputs(name)`` gives it, computed once: a mean
    keeps its per-example scores in the returned :class:`ExampleScores`."""
    metrics: Metrics = {}
    kept = ExampleScores([e.uid for e in examples])
    for name in names:
        value, scores = resolve_metric(name).evaluate(*inputs(name))
        metrics[name] = value
        if scores is not None:
            kept.scores[name] = scores
    return metrics, kept


def metric_names(task: TaskSpec, gives: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The metrics to compute: ``extra`` then the task's, minus judged ones (peftcore.score.judge
    scores those from the predictions). ``ValueError`` for a metric taking other inputs."""
    names = []
    for name in dict.fromkeys([*extra, *task.metrics]):
        metric = resolve_metric(name)
        if metric.inputs == "judge":
            continue
        if metric.inputs not in gives:
            raise ValueError(
                f"task {task.name!r} ({task.type}) gives {' and '.join(gives)}, "
                f"but metric {name!r} takes {metric.inputs}"
            )
        names.append(name)
    return names
