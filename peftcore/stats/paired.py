"""Method a against method b on the same examples: the difference, its interval and a p-value.

:func:`compare_scores` for a mean of per-example scores (exact McNemar for 0/1 scores, paired t
otherwise; paired bootstrap interval), :func:`compare_corpus` for a corpus metric (paired
bootstrap), :func:`compare_seeded` for several training seeds a side (seeds, then examples); each
with the smallest difference it could detect (:func:`minimum_detectable_difference`). Overview:
:mod:`peftcore.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from peftcore.stats.intervals import (
    Statistic,
    _check_resamples,
    _checked,
    _is_binary,
    _percentiles,
    _resampled,
    _scores,
    bootstrap_weights,
    weighted_mean,
    z_value,
)

#: The power :func:`minimum_detectable_difference` plans for unless told otherwise.
DEFAULT_POWER = 0.8


@dataclass(frozen=True)
class Comparison:
    """Method a against method b on the same examples: the difference, its interval and a p-value."""

    metric: str
    n: int  # paired examples
    a: float  # each side's value on the paired examples
    b: float
    difference: float  # a - b
    stderr: float  # of the difference
    low: float  # confidence interval of the difference
    high: float
    confidence: float
    p_value: float  # two-sided, for "no difference"
    test: str  # "exact McNemar" | "paired t" | "paired bootstrap" | "paired bootstrap (seeds, then examples)"
    mde: float  # minimum detectable difference at 80% power, two-sided alpha = 1 - confidence
    interval_method: str  # "paired bootstrap" | "normal"
    resamples: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, ints, strings and ``None``, ready for ``json.dumps``."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Planning


def minimum_detectable_difference(
    sd: float, n: int, *, confidence: float = 0.95, power: float = DEFAULT_POWER
) -> float:
    """The smallest true difference of means a two-sided test at ``alpha = 1 - confidence`` finds
    with probability ``power``, given the per-example standard deviation ``sd`` of the paired
    differences and ``n`` examples: ``(z_{1-alpha/2} + z_power) * sd / sqrt(n)`` (normal
    approximation).

    ``ValueError`` for ``n < 1``, a negative or NaN ``sd``, or a ``confidence`` or ``power``
    outside (0, 1).

    >>> round(minimum_detectable_difference(0.5, 1000), 4)  # accuracy near 0.5, 1,000 examples
    0.0443
    """
    from scipy.stats import norm

    if n < 1:
        raise ValueError(f"minimum detectable difference needs at least 1 example, got n={n}")
    if not sd >= 0:
        raise ValueError(f"sd must be a non-negative number, got {sd}")
    if not 0 < power < 1:
        raise ValueError(f"power must be in (0, 1), got {power}")
    return (z_value(confidence) + float(norm.ppf(power))) * sd / math.sqrt(n)


# ---------------------------------------------------------------------------------------------
# Paired comparisons


def compare_scores(
    a_scores: Sequence[float] | np.ndarray,
    b_scores: Sequence[float] | np.ndarray,
    *,
    metric: str = "",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Method a against method b on a metric that is a mean of per-example scores, paired by
    example: ``a_scores[i]`` and ``b_scores[i]`` are the same example (pair by uid first).

    - difference: ``mean(a) - mean(b)``; standard error ``sd(a - b, ddof=1) / sqrt(n)``;
    - interval: paired bootstrap over examples (percentiles of the resampled mean difference), or
      ``difference +- z * stderr`` (``interval_method="normal"``) when ``resamples=0``;
    - p-value: exact McNemar (a two-sided binomial test on the discordant pairs; 1.0 when there are
      none) when every score is 0 or 1, else a paired t-test (1.0 when every difference is the
      same zero, 0.0 when every difference is the same non-zero value);
    - mde: :func:`minimum_detectable_difference` from ``sd(a - b)``; for 0/1 scores that sd comes
      from the observed rate of discordant pairs.

    ``ValueError`` for different lengths ("unpaired"), fewer than 2 pairs, NaN/infinite scores,
    ``resamples`` of 1 or a ``confidence`` outside (0, 1).
    """
    z = z_value(confidence)
    a = _scores(a_scores, "a_scores")
    b = _scores(b_scores, "b_scores")
    if a.size != b.size:
        raise ValueError(
            f"unpaired: a paired comparison needs the same examples on both sides; a has {a.size} "
            f"examples, b has {b.size} (pair them by example id first)"
        )
    n = a.size
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 examples, got {n}")
    differences = a - b
    difference = float(differences.mean())
    sd = float(differences.std(ddof=1))
    stderr = sd / math.sqrt(n)
    if resamples == 0:
        low, high = difference - z * stderr, difference + z * stderr
        interval_method, recorded_resamples = "normal", None
    else:
        draws = _resampled(weighted_mean(differences), n, resamples, seed)
        low, high = _percentiles(draws, confidence)
        interval_method, recorded_resamples = "paired bootstrap", int(resamples)
    if _is_binary(a) and _is_binary(b):
        test, p_value = "exact McNemar", _mcnemar_exact(a, b)
    else:
        test, p_value = "paired t", _paired_t(differences)
    return Comparison(
        metric=metric,
        n=int(n),
        a=float(a.mean()),
        b=float(b.mean()),
        difference=difference,
        stderr=stderr,
        low=low,
        high=high,
        confidence=float(confidence),
        p_value=p_value,
        test=test,
        mde=minimum_detectable_difference(sd, n, confidence=confidence),
        interval_method=interval_method,
        resamples=recorded_resamples,
    )


def compare_corpus(
    statistic_a: Statistic,
    statistic_b: Statistic,
    n: int,
    *,
    estimate_a: float,
    estimate_b: float,
    metric: str = "",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Method a against method b on a corpus metric (macro F1, corpus perplexity) of the same
    ``n`` examples, by paired bootstrap: the same resample counts go to both statistics, and the
    interval and standard error are the percentiles and standard deviation of
    ``statistic_a(W) - statistic_b(W)``. ``estimate_a`` and ``estimate_b`` are the metric on the
    original examples.

    The p-value is the two-sided bootstrap p, ``2 * min(#(diff <= 0) + 1, #(diff >= 0) + 1) /
    (resamples + 1)`` capped at 1; the mde is ``(z_{1-alpha/2} + z_{0.8}) * stderr``.

    ``ValueError`` for ``resamples < 2``, a ``confidence`` outside (0, 1), or a statistic that
    returns the wrong shape or NaN.
    """
    z = z_value(confidence)
    _check_resamples(resamples)
    weights = bootstrap_weights(n, resamples, seed)
    draws = _checked(statistic_a(weights), resamples, "statistic_a") - _checked(
        statistic_b(weights), resamples, "statistic_b"
    )
    return _bootstrap_comparison(
        draws,
        metric=metric,
        n=n,
        a=estimate_a,
        b=estimate_b,
        z=z,
        confidence=confidence,
        test="paired bootstrap",
    )


def compare_seeded(
    a_runs: Sequence[Sequence[float] | np.ndarray],
    b_runs: Sequence[Sequence[float] | np.ndarray],
    *,
    metric: str = "",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """Method a against method b when each was trained with several seeds, every run scored on
    the same examples (``a_runs[s][i]``: seed ``s``, example ``i``). The difference is the mean
    over seeds of a minus the mean over seeds of b, so both the training noise and the sampling of
    examples count in its interval.

    Two-level bootstrap: each resample draws seeds with replacement, independently per side, and
    one set of example counts shared by every run of both sides (so the pairing by example is
    kept); the statistic is the mean over the drawn seeds of a minus that of b. The p-value and mde
    are as in :func:`compare_corpus`. With one seed a side this is :func:`compare_scores`'s
    bootstrap.

    ``ValueError`` for a side without runs, runs of different lengths, fewer than 2 examples,
    NaN/infinite scores, ``resamples < 2`` or a ``confidence`` outside (0, 1).
    """
    z = z_value(confidence)
    a = _runs(a_runs, "a_runs")
    b = _runs(b_runs, "b_runs")
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"unpaired: every run must score the same examples; a's runs have {a.shape[1]} "
            f"examples, b's have {b.shape[1]}"
        )
    n = a.shape[1]
    if n < 2:
        raise ValueError(f"a paired comparison needs at least 2 examples, got {n}")
    _check_resamples(resamples)
    # the same example counts as compare_scores with this seed; seeds from a separate stream
    weights = bootstrap_weights(n, resamples, seed)
    seed_rng = np.random.default_rng([seed, 1])
    per_run_a = (weights @ a.T) / n  # (resamples, seeds of a): each run's mean under each resample
    per_run_b = (weights @ b.T) / n
    seeds_a = seed_rng.multinomial(a.shape[0], [1 / a.shape[0]] * a.shape[0], size=resamples)
    seeds_b = seed_rng.multinomial(b.shape[0], [1 / b.shape[0]] * b.shape[0], size=resamples)
    draws = (seeds_a * per_run_a).sum(axis=1) / a.shape[0] - (seeds_b * per_run_b).sum(axis=1) / b.shape[0]
    return _bootstrap_comparison(
        draws,
        metric=metric,
        n=n,
        a=float(a.mean()),
        b=float(b.mean()),
        z=z,
        confidence=confidence,
        test="paired bootstrap (seeds, then examples)",
    )


# ---------------------------------------------------------------------------------------------
# Helpers


def _runs(runs: Sequence[Sequence[float] | np.ndarray], name: str) -> np.ndarray:
    """Training runs' per-example scores as a ``(runs, examples)`` array."""
    if len(runs) == 0:
        raise ValueError(f"{name} holds no runs")
    vectors = [_scores(run, f"{name}[{i}]") for i, run in enumerate(runs)]
    lengths = sorted({vector.size for vector in vectors})
    if len(lengths) > 1:
        raise ValueError(f"{name}: every run must score the same examples, got lengths {lengths}")
    return np.stack(vectors)


def _mcnemar_exact(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar: a two-sided binomial test at 1/2 on the discordant pairs."""
    from scipy.stats import binomtest

    only_a = int(np.sum((a == 1) & (b == 0)))
    only_b = int(np.sum((a == 0) & (b == 1)))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(only_a, only_a + only_b, 0.5).pvalue)


def _paired_t(differences: np.ndarray) -> float:
    """Two-sided paired t-test p-value, as ``scipy.stats.ttest_rel``; written out so that identical
    differences give 1.0 or 0.0 instead of NaN and a catastrophic-cancellation warning."""
    from scipy.stats import t

    if np.all(differences == differences[0]):
        return 1.0 if differences[0] == 0 else 0.0
    n = differences.size
    statistic = differences.mean() / (differences.std(ddof=1) / math.sqrt(n))
    return float(2 * t.sf(abs(statistic), n - 1))


def _bootstrap_p_value(draws: np.ndarray) -> float:
    """Two-sided bootstrap p for "no difference": twice the smaller share of resampled differences
    on either side of 0, each counted with the +1 that keeps p above 0."""
    resamples = draws.size
    at_most_zero = int(np.sum(draws <= 0))
    at_least_zero = int(np.sum(draws >= 0))
    return min(1.0, 2 * (min(at_most_zero, at_least_zero) + 1) / (resamples + 1))


def _bootstrap_comparison(
    draws: np.ndarray, *, metric: str, n: int, a: float, b: float, z: float, confidence: float, test: str
) -> Comparison:
    from scipy.stats import norm

    stderr = float(draws.std(ddof=1))
    low, high = _percentiles(draws, confidence)
    return Comparison(
        metric=metric,
        n=int(n),
        a=float(a),
        b=float(b),
        difference=float(a) - float(b),
        stderr=stderr,
        low=low,
        high=high,
        confidence=float(confidence),
        p_value=_bootstrap_p_value(draws),
        test=test,
        mde=(z + float(norm.ppf(DEFAULT_POWER))) * stderr,
        interval_method="paired bootstrap",
        resamples=int(draws.size),
    )
