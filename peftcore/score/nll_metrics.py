"""Metrics over a summed negative log-likelihood: perplexity.

Each takes ``(total_nll, total_tokens)``, the natural-log NLL summed over every scored token.
"""

from __future__ import annotations

import math

from peftcore.score.metric_registry import register


@register(
    "perplexity",
    description="exp(total negative log-likelihood / total tokens) of the held-out text",
)
def perplexity(total_nll: float, total_tokens: int) -> float:
    """Perplexity from a summed natural-log NLL; ``inf`` when it overflows a float.

    ``ValueError`` for no tokens.

    >>> round(perplexity(2 * math.log(8), 2), 6)
    8.0
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {total_tokens}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf
