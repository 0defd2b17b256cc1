"""peftcore: a pytest-native benchmark for parameter-efficient fine-tuning of language models.

``peftcore.load_results(runs)`` reads stored case records into a pandas DataFrame (see
:mod:`peftcore.results.frame`); ``peftcore.load_examples(runs)`` their per-example scores, one
row per case x split x example; ``peftcore.compare(a, b, metric)`` the paired difference of two
cases with its interval and p-value (:mod:`peftcore.results.compare`). Each is imported on first
use: the pytest plugin imports this package at start-up, and collection must stay free of
pandas and torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compare", "load_examples", "load_results"]


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from peftcore.results.frame import load_results

        return load_results
    if name in ("compare", "load_examples"):
        from peftcore.results import compare

        return getattr(compare, name)
    raise AttributeError(f"module 'peftcore' has no attribute {name!r}")
