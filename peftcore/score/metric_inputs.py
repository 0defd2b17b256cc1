"""What every metric function checks and shares: paired inputs, gold answers, an exact mean."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

# One example's gold answer: a single string or several (the best one counts).
Reference = str | Sequence[str]


def check_pairs(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    """``ValueError`` unless there are as many predictions as references, and at least one."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no examples to score")


def gold_answers(reference: Reference, index: int) -> list[str]:
    """The gold strings of example ``index``: a plain string is a single gold answer.

    ``ValueError`` for an example with no gold answer at all.
    """
    golds = [reference] if isinstance(reference, str) else list(reference)
    if not golds:
        raise ValueError(f"example {index} has no gold answer")
    return golds


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean with ``math.fsum`` (no drift over many examples).

    ``ZeroDivisionError`` for no values: callers check their inputs first.
    """
    values = list(values)
    return math.fsum(values) / len(values)
