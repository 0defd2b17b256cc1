"""A CI gate that tells a regression from noise: :func:`regression_p_value`. Overview:
:mod:`peftcore.stats`."""

from __future__ import annotations

import math


def regression_p_value(drop: float, sampling_stderr: float, training_sd: float) -> float:
    """One-sided p-value that a metric drop this large (positive = worse) is noise.

    The noise is normal with standard deviation ``sqrt(sampling_stderr**2 + 2 * training_sd**2)``:
    the standard error of the difference from sampling the examples, plus the run-to-run spread of
    training twice, since the baseline and the current run are each one draw of it. A drop of 0 or
    less gives 1.0; with no noise at all any drop gives 0.0.

    ``ValueError`` for a NaN drop, or a negative or NaN ``sampling_stderr`` or ``training_sd``.

    >>> round(regression_p_value(0.0196, 0.01, 0.0), 3)  # about 1.96 standard errors
    0.025
    """
    from scipy.stats import norm

    if math.isnan(drop):
        raise ValueError("drop is NaN")
    for name, value in (("sampling_stderr", sampling_stderr), ("training_sd", training_sd)):
        if not value >= 0:
            raise ValueError(f"{name} must be a non-negative number, got {value}")
    if drop <= 0:
        return 1.0
    noise_sd = math.sqrt(sampling_stderr**2 + 2 * training_sd**2)
    if noise_sd == 0:
        return 0.0
    return float(norm.sf(drop / noise_sd))
