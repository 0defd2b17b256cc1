"""peftcore: a pytest-native benchmark for parameter-efficient fine-tuning of language models.

``peftcore.load_results(runs)`` reads stored case records into a pandas DataFrame (see
:mod:`peftcore.results.frame`). It is imported on first use: the pytest plugin imports this
package at start-up, and collection must stay free of pandas and torch.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_results"]


def __getattr__(name: str) -> Any:
    if name == "load_results":
        from peftcore.results.frame import load_results

        return load_results
    raise AttributeError(f"module 'peftcore' has no attribute {name!r}")
