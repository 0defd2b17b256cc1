"""Many comparisons at once: adjusted p-values, family-wise (:func:`holm`) or by false discovery
rate (:func:`benjamini_hochberg`). Overview: :mod:`peftcore.stats`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (family-wise error rate), in the input order: the
    ``i``-th smallest p is multiplied by ``m - i`` (``i`` from 0), then made non-decreasing in that
    order and capped at 1. Reject the hypotheses whose adjusted p is at most alpha.

    ``ValueError`` for p-values outside [0, 1] or NaN.

    >>> holm([0.01, 0.04, 0.03]).tolist()
    [0.03, 0.06, 0.06]
    """
    p = _p_values(p_values)
    order = np.argsort(p, kind="stable")
    m = p.size
    adjusted_sorted = np.minimum(np.maximum.accumulate(p[order] * np.arange(m, 0, -1)), 1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted


def benjamini_hochberg(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), in the input order: the
    ``i``-th smallest p (``i`` from 1) is multiplied by ``m / i``, then made non-decreasing from the
    largest down and capped at 1.

    ``ValueError`` for p-values outside [0, 1] or NaN.

    >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(6).tolist()
    [0.03, 0.04, 0.04]
    """
    p = _p_values(p_values)
    order = np.argsort(p, kind="stable")
    m = p.size
    # divided by i/m (statsmodels' order of operations): never rounds below p, since i/m <= 1
    scaled = p[order] / (np.arange(1, m + 1) / m)
    adjusted_sorted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    adjusted = np.empty_like(p)
    adjusted[order] = adjusted_sorted
    return adjusted


# ---------------------------------------------------------------------------------------------
# Helpers


def _p_values(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p-values must be 1-D, got shape {p.shape}")
    if not np.all((p >= 0) & (p <= 1)):  # NaN fails both comparisons
        raise ValueError(f"p-values must be in [0, 1], got {p[~((p >= 0) & (p <= 1))].tolist()}")
    return p
