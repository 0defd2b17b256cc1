"""One metric on one split: its standard error and confidence interval, from per-example scores.

A mean of per-example scores gets a closed form (:func:`mean_interval`: Wilson for 0/1 scores,
normal otherwise); a corpus metric that is not a mean (macro F1, corpus perplexity) a percentile
bootstrap (:func:`bootstrap_interval`) over a vectorised statistic of resample counts
(:func:`weighted_mean`, :func:`ratio_perplexity`, :func:`macro_f1_statistic`), drawn once by
:func:`bootstrap_weights`. The input checks and bootstrap helpers at the end are shared with
:mod:`peftcore.stats.paired`. Overview: :mod:`peftcore.stats`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: A vectorised statistic of weighted examples: ``(resamples, n)`` resample counts in, one value
#: per resample out (shape ``(resamples,)``).
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A metric's value on a split, its standard error and a confidence interval around it."""

    estimate: float  # the metric's value on the given examples
    stderr: float
    low: float
    high: float
    confidence: float  # e.g. 0.95
    method: str  # "normal" | "wilson" | "bootstrap"
    n: int  # examples
    resamples: int | None = None  # bootstrap only
    seed: int | None = None  # bootstrap only

    def to_dict(self) -> dict[str, Any]:
        """Plain floats, ints, strings and ``None``, ready for ``json.dumps``."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------
# Critical values


def z_value(confidence: float) -> float:
    """The two-sided standard-normal critical value: 1.959963984540054 for 0.95.

    ``ValueError`` unless ``0 < confidence < 1``.

    >>> round(z_value(0.95), 6)
    1.959964
    """
    from scipy.stats import norm

    _check_confidence(confidence)
    # isf of the tail, as statsmodels computes it, so Wilson bounds agree to the last bit
    return float(norm.isf((1 - confidence) / 2))


# ---------------------------------------------------------------------------------------------
# One metric on one split


def mean_interval(scores: Sequence[float] | np.ndarray, confidence: float = 0.95) -> Interval:
    """The mean of per-example scores with its standard error and confidence interval.

    The standard error is the sample standard deviation (``ddof=1``) over ``sqrt(n)``, exactly
    lm-evaluation-harness's ``mean_stderr`` (and so its ``acc_stderr`` on 0/1 scores). When every
    score is 0 or 1 the interval is the Wilson score interval (method ``"wilson"``; it stays
    inside [0, 1] and is not centred on the estimate), otherwise ``estimate +- z * stderr``
    (method ``"normal"``).

    For a single example the standard error is NaN, and so is a normal interval; a Wilson interval
    is still defined for one example and is returned.

    ``ValueError`` for no scores, NaN or infinite scores (says how many), or a ``confidence``
    outside (0, 1).

    >>> interval = mean_interval([1, 1, 1, 0])
    >>> interval.method, interval.estimate, round(interval.stderr, 4)
    ('wilson', 0.75, 0.25)
    """
    z = z_value(confidence)
    values = _scores(scores, "scores")
    n = values.size
    estimate = float(values.mean())
    stderr = _stderr(values)
    if _is_binary(values):
        low, high = _wilson(int(values.sum()), n, z)
        method = "wilson"
    else:
        low, high = estimate - z * stderr, estimate + z * stderr
        method = "normal"
    return Interval(
        estimate=estimate,
        stderr=stderr,
        low=low,
        high=high,
        confidence=float(confidence),
        method=method,
        n=int(n),
    )


def bootstrap_weights(n: int, resamples: int = 1000, seed: int = 0) -> np.ndarray:
    """Resample counts of a nonparametric bootstrap: an int array of shape ``(resamples, n)``
    whose row ``r`` says how many times each example is drawn in resample ``r`` (rows sum to
    ``n``). The same ``(n, resamples, seed)`` gives the same matrix, so every metric of a split and
    both sides of a comparison see the same resamples.

    Drawn as ``n`` uniform indices per resample and counted, which has the distribution of
    ``rng.multinomial(n, [1/n] * n)`` and is several times faster.

    ``ValueError`` for ``n < 1`` or ``resamples < 1``.

    >>> bootstrap_weights(5, resamples=3, seed=0).sum(axis=1).tolist()
    [5, 5, 5]
    """
    if n < 1:
        raise ValueError(f"a bootstrap needs at least 1 example, got n={n}")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(resamples, n))
    # one bincount over (resample, example) cells instead of a loop over resamples
    cells = (picks + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(cells, minlength=resamples * n).reshape(resamples, n)


def bootstrap_interval(
    statistic: Statistic,
    n: int,
    *,
    estimate: float,
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Interval:
    """A percentile bootstrap interval of any corpus metric of ``n`` examples.

    ``statistic`` takes the ``(resamples, n)`` resample counts and returns the metric on each
    resample (see :func:`weighted_mean`, :func:`ratio_perplexity`, :func:`macro_f1_statistic`);
    ``estimate`` is the metric on the original examples. The standard error is the standard
    deviation (``ddof=1``) of the resampled values.

    ``ValueError`` for ``resamples < 2``, a ``confidence`` outside (0, 1), a statistic that does not
    return one value per resample, or one that returns NaN.

    >>> values = np.array([1.0, 2.0, 3.0, 4.0])
    >>> interval = bootstrap_interval(weighted_mean(values), 4, estimate=2.5, resamples=200)
    >>> interval.method, interval.low < 2.5 < interval.high
    ('bootstrap', True)
    """
    _check_confidence(confidence)
    draws = _resampled(statistic, n, resamples, seed)
    low, high = _percentiles(draws, confidence)
    return Interval(
        estimate=float(estimate),
        stderr=float(draws.std(ddof=1)),
        low=low,
        high=high,
        confidence=float(confidence),
        method="bootstrap",
        n=int(n),
        resamples=int(resamples),
        seed=int(seed),
    )


# ---------------------------------------------------------------------------------------------
# Vectorised corpus statistics: each returns a Statistic of resample counts


def weighted_mean(values: Sequence[float] | np.ndarray) -> Statistic:
    """The mean of per-example values under each resample's counts: ``W @ values / W.sum(1)``.

    Used for any mean of per-example scores, including paired differences ``a - b``.
    ``ValueError`` for no values or NaN/infinite values.

    >>> weighted_mean([1.0, 3.0])(np.array([[1, 1], [2, 0]])).tolist()
    [2.0, 1.0]
    """
    vector = _scores(values, "values")

    def statistic(weights: np.ndarray) -> np.ndarray:
        return np.asarray((weights @ vector) / weights.sum(axis=1), dtype=float)

    return statistic


def ratio_perplexity(nll: Sequence[float] | np.ndarray, tokens: Sequence[int] | np.ndarray) -> Statistic:
    """Corpus perplexity over documents: ``exp(total NLL / total tokens)`` under each resample's
    counts, with ``nll`` each document's summed natural-log NLL and ``tokens`` its token count.
    Overflow gives ``inf``, as :func:`peftcore.score.nll_metrics.perplexity` does.

    ``ValueError`` when the lengths differ, for NaN/infinite NLLs, negative token counts or no
    tokens at all.

    >>> import math
    >>> statistic = ratio_perplexity([2 * math.log(8), 0.0], [2, 1])
    >>> round(float(statistic(np.ones((1, 2)))[0]), 6)  # exp(2 ln 8 / 3) = 4
    4.0
    """
    nll_vector = _scores(nll, "nll")
    token_vector = np.asarray(tokens, dtype=float)
    if token_vector.shape != nll_vector.shape:
        raise ValueError(f"nll has {nll_vector.size} documents, tokens has {token_vector.size}")
    if not np.all(token_vector >= 0) or token_vector.sum() <= 0:
        raise ValueError("token counts must be non-negative with at least one token in all")
    # one product for both totals
    columns = np.stack([nll_vector, token_vector], axis=1)

    def statistic(weights: np.ndarray) -> np.ndarray:
        totals = weights @ columns
        # a resample of only empty documents has no perplexity; it is vanishingly rare
        with np.errstate(over="ignore"):
            return np.asarray(np.exp(totals[:, 0] / totals[:, 1]), dtype=float)

    return statistic


def macro_f1_statistic(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> Statistic:
    """Macro F1 under each resample's counts, over every class seen in ``gold`` or ``predicted``
    of the original examples (the classes of :func:`peftcore.score.label_metrics.macro_f1`).

    A class absent from a resample (neither gold nor predicted there) scores F1 0, as
    ``sklearn.metrics.f1_score(average="macro", labels=<all classes>, zero_division=0)`` does on
    the resampled examples; so a resample that loses a rare class scores lower, rather than being
    averaged over fewer classes. Labels are any hashables (ints, strings); ``1`` and ``"1"`` are
    different classes.

    ``ValueError`` when the lengths differ or there are no examples.

    >>> round(float(macro_f1_statistic([1, 1, 0, 0], [1, 0, 0, 0])(np.ones((1, 4)))[0]), 6)
    0.733333
    """
    if len(predicted) != len(gold):
        raise ValueError(f"predicted has {len(predicted)} labels, gold has {len(gold)}")
    if len(gold) == 0:
        raise ValueError("macro F1 needs at least one example")
    # a dict, not np.unique: it keeps 1 and "1" apart and needs no ordering between labels
    codes: dict[Hashable, int] = {}
    predicted_codes = np.array([codes.setdefault(label, len(codes)) for label in predicted])
    gold_codes = np.array([codes.setdefault(label, len(codes)) for label in gold])
    classes = np.arange(len(codes))
    predicted_hot = predicted_codes[:, None] == classes
    gold_hot = gold_codes[:, None] == classes
    # [true positives | predicted | gold] per class, so one product counts all three
    columns = np.concatenate([predicted_hot & gold_hot, predicted_hot, gold_hot], axis=1).astype(float)
    k = len(codes)

    def statistic(weights: np.ndarray) -> np.ndarray:
        counts = weights @ columns
        true_pos, predicted_count, gold_count = counts[:, :k], counts[:, k : 2 * k], counts[:, 2 * k :]
        # 2TP / (2TP + FP + FN) = 2TP / (predicted + gold); 0 where the class is absent
        denominator = predicted_count + gold_count
        f1 = np.divide(2 * true_pos, denominator, out=np.zeros_like(true_pos), where=denominator > 0)
        return np.asarray(f1.mean(axis=1), dtype=float)

    return statistic


# ---------------------------------------------------------------------------------------------
# Helpers (the input checks and the bootstrap's are shared with peftcore.stats.paired)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _scores(scores: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """Per-example scores as a 1-D float array; ``ValueError`` for none, or NaN or infinities."""
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"{name} must be one score per example (1-D), got shape {values.shape}")
    if values.size == 0:
        raise ValueError(f"{name} is empty: no examples to take statistics of")
    missing = int(np.isnan(values).sum())
    if missing:
        raise ValueError(f"{name} holds {missing} NaN of {values.size} scores")
    infinite = int(np.isinf(values).sum())
    if infinite:
        raise ValueError(f"{name} holds {infinite} infinite of {values.size} scores")
    return values


def _is_binary(values: np.ndarray) -> bool:
    return bool(np.all((values == 0) | (values == 1)))


def _stderr(values: np.ndarray) -> float:
    """lm-evaluation-harness's ``mean_stderr``: sample sd (``ddof=1``) over sqrt(n); NaN for n=1."""
    if values.size < 2:
        return math.nan
    return float(values.std(ddof=1) / math.sqrt(values.size))


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson score interval, written as statsmodels' ``proportion_confint`` computes it."""
    p = successes / n
    z2 = z * z
    denominator = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denominator
    # at p = 0 (or 1) the low (or high) end is exactly 0 (or 1), which rounding can miss either way
    low = 0.0 if successes == 0 else centre - half_width
    high = 1.0 if successes == n else centre + half_width
    return low, high


def _check_resamples(resamples: int) -> None:
    # a standard deviation of the resampled values needs two of them
    if resamples < 2:
        raise ValueError(f"a bootstrap needs at least 2 resamples, got {resamples}")


def _resampled(statistic: Statistic, n: int, resamples: int, seed: int) -> np.ndarray:
    _check_resamples(resamples)
    return _checked(statistic(bootstrap_weights(n, resamples, seed)), resamples, "statistic")


def _checked(draws: np.ndarray, resamples: int, name: str) -> np.ndarray:
    """A statistic's output: one finite-or-infinite value per resample."""
    draws = np.asarray(draws, dtype=float)
    if draws.shape != (resamples,):
        raise ValueError(
            f"{name} must return one value per resample: expected shape ({resamples},), got {draws.shape}"
        )
    missing = int(np.isnan(draws).sum())
    if missing:
        raise ValueError(f"{name} returned NaN on {missing} of {resamples} resamples")
    return draws


def _percentiles(draws: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)
