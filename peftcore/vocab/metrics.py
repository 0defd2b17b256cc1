"""Every built-in metric by name, with what every layer may know of it without its function.

``BUILT_IN_METRICS`` says, once, for each name task specs use: whether higher is better, what
it takes from its task's evaluator, and how its uncertainty comes (from each example's score,
or by resampling a corpus metric's kept inputs). Specs check metric names and inputs against
it when they load, gates and reports read directions from it, and
:mod:`peftcore.score.metrics` registers one function under each name (a name not declared here
is refused there), so none of them imports the scoring code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import numpy as np

MetricInputs = Literal["texts", "indices", "choice_loglikelihoods", "nll", "judge"]
# How a metric's standard error and paired comparisons come: "mean", from each example's score
# (kept by scoring); "corpus", by resampling the inputs scoring keeps (a bootstrap); None, not
# at all (an LLM judge's scores).
Uncertainty = Literal["mean", "corpus"] | None


@dataclass(frozen=True)
class MetricInfo:
    higher_is_better: bool
    inputs: MetricInputs
    uncertainty: Uncertainty


HIGHER, LOWER = True, False

BUILT_IN_METRICS: dict[str, MetricInfo] = {
    # choices and labels (peftcore.score.label_metrics)
    "accuracy": MetricInfo(HIGHER, "indices", "mean"),
    "accuracy_norm": MetricInfo(HIGHER, "indices", "mean"),
    "accuracy_bytes": MetricInfo(HIGHER, "indices", "mean"),
    "macro_f1": MetricInfo(HIGHER, "indices", "corpus"),
    "brier_score": MetricInfo(LOWER, "choice_loglikelihoods", "mean"),
    # summed negative log-likelihood (peftcore.score.nll_metrics)
    "perplexity": MetricInfo(LOWER, "nll", "corpus"),
    # generated texts (peftcore.score.number_metrics, text_metrics, semantic_metrics)
    "number_exact_match": MetricInfo(HIGHER, "texts", "mean"),
    "abs_diff": MetricInfo(LOWER, "texts", "mean"),
    "number_unparseable_rate": MetricInfo(LOWER, "texts", "mean"),
    "cosine_similarity": MetricInfo(HIGHER, "texts", "mean"),
    "bertscore_f1": MetricInfo(HIGHER, "texts", "mean"),
    "f1": MetricInfo(HIGHER, "texts", "mean"),
    "exact_match": MetricInfo(HIGHER, "texts", "mean"),
    "rouge_l": MetricInfo(HIGHER, "texts", "mean"),
    # an LLM judge's 1-5 scores of generated answers (peftcore.score.judge)
    "judge_correctness": MetricInfo(HIGHER, "judge", None),
    "judge_completeness": MetricInfo(HIGHER, "judge", None),
    "judge_faithfulness": MetricInfo(HIGHER, "judge", None),
}

# What each task type's evaluator gives its metrics (judged metrics come from generated answers).
TASK_INPUTS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("indices", "choice_loglikelihoods"),
    "classification": ("indices", "choice_loglikelihoods"),
    "generation": ("texts", "judge"),
    "language_modeling": ("nll",),
}

# What each task type's evaluator reports whatever the task lists (peftcore.score.run).
EVALUATOR_METRICS: dict[str, tuple[str, ...]] = {
    "multiple_choice": ("accuracy", "accuracy_norm"),
    "classification": ("accuracy", "accuracy_norm"),
    "generation": (),
    "language_modeling": ("perplexity",),
}

# Corpus-level metrics, recomputed on a resample from their kept inputs.
CORPUS_METRICS = tuple(name for name, info in BUILT_IN_METRICS.items() if info.uncertainty == "corpus")


def judged_metrics() -> tuple[str, ...]:
    """The metrics an LLM judge gives (``eval.judge``), in declaration order."""
    return tuple(name for name, info in BUILT_IN_METRICS.items() if info.inputs == "judge")


def has_example_scores(name: str) -> bool:
    """Whether scoring keeps what metric ``name`` needs for intervals and paired comparisons:
    per-example scores of a mean, or a corpus metric's inputs."""
    info = BUILT_IN_METRICS.get(name)
    return info is not None and info.uncertainty is not None


def corpus_statistic(name: str, examples: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray] | None:
    """The vectorised statistic of corpus metric ``name`` over a split's stored ``examples``
    block (``corpus`` inputs), or None when the block cannot recompute it."""
    inputs = (examples.get("corpus") or {}).get(name)
    if not isinstance(inputs, Mapping):
        return None
    from peftcore.stats import intervals  # numpy and scipy: only when a statistic is asked for

    if name == "macro_f1":
        return intervals.macro_f1_statistic(inputs["predicted"], inputs["gold"])
    if name == "perplexity":
        return intervals.ratio_perplexity(inputs["nll"], inputs["tokens"])
    return None
