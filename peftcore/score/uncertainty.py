"""Each metric of a scored split with its standard error and 95% interval, from the split's
per-example scores (:class:`peftcore.score.evaluator.ExampleScores`).

- A mean over examples (accuracy, Brier score, token F1, exact match, cosine similarity, ...):
  the closed form, sample standard deviation over sqrt(n) as lm-evaluation-harness's
  ``mean_stderr``; the Wilson interval when every score is 0 or 1, else the normal interval.
  Examples the metric leaves out (nan, e.g. ``abs_diff`` without a number) are not counted.
- A corpus-level metric (macro F1, perplexity): a seeded bootstrap over examples, vectorised
  (:mod:`peftcore.stats.intervals`, the statistic from :func:`peftcore.vocab.metrics.corpus_statistic`);
  the number of resamples and the seed are recorded.
- Any other metric (an ``evaluate`` metric, a judged one): no interval; it is left out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from peftcore.vocab.metrics import corpus_statistic

if TYPE_CHECKING:
    from peftcore.score.evaluator import ExampleScores

CONFIDENCE = 0.95
RESAMPLES = 1000
SEED = 0


def metric_intervals(
    metrics: Mapping[str, float], kept: ExampleScores | Mapping[str, Any], *, confidence: float = CONFIDENCE
) -> dict[str, dict[str, Any]]:
    """Metric name -> ``{"stderr", "ci_low", "ci_high", "confidence", "method", "n", ...}`` for
    every metric of ``metrics`` that ``kept`` has per-example scores or corpus inputs for."""
    from peftcore.stats import intervals

    block = kept.to_dict() if hasattr(kept, "to_dict") else kept
    scores: Mapping[str, list[float]] = block.get("scores") or {}
    out: dict[str, dict[str, Any]] = {}
    for name, value in metrics.items():
        if not isinstance(value, (int, float)) or math.isnan(value):
            continue
        interval = None
        if name in scores:
            finite = [s for s in scores[name] if not math.isnan(s)]
            if len(finite) >= 2:
                interval = intervals.mean_interval(finite, confidence)
        else:
            statistic = corpus_statistic(name, block)
            if statistic is not None:
                n = len(block.get("uid") or [])
                interval = intervals.bootstrap_interval(
                    statistic, n, estimate=float(value), confidence=confidence, resamples=RESAMPLES, seed=SEED
                )
        if interval is not None:
            out[name] = _as_record(interval)
    return out


def _as_record(interval: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "stderr": interval.stderr,
        "ci_low": interval.low,
        "ci_high": interval.high,
        "confidence": interval.confidence,
        "method": interval.method,
        "n": interval.n,
    }
    if interval.resamples is not None:
        entry.update(resamples=interval.resamples, seed=interval.seed)
    return entry
