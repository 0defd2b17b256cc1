"""Metrics comparing generated text with gold answers word by word: SQuAD v1.1 F1 and exact
match, ROUGE-L. Each takes ``(predictions, references)`` and counts the best gold answer of
every example; values are fractions in [0, 1] (not the 0-100 of the official SQuAD script)."""

from __future__ import annotations

import functools
import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from peftcore.score.metric_inputs import Reference, check_pairs, gold_answers, mean
from peftcore.score.metric_registry import register

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def best_over_golds(
    score_pair: Callable[[str, str], float], predictions: Sequence[str], references: Sequence[Reference]
) -> list[float]:
    """Each example's best ``score_pair(prediction, gold)`` over its gold answers.

    ``ValueError`` for mismatched or empty inputs, or an example without a gold answer.
    """
    check_pairs(predictions, references)
    return [
        max(score_pair(pred, gold) for gold in gold_answers(ref, i))
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
    ]


def mean_best_over_golds(
    score_pair: Callable[[str, str], float], predictions: Sequence[str], references: Sequence[Reference]
) -> float:
    """Mean over examples of :func:`best_over_golds`."""
    return mean(best_over_golds(score_pair, predictions, references))


# --------------------------------------------------------------------------- SQuAD v1.1


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalization: lower-case, drop ASCII punctuation and a/an/the, collapse spaces.

    >>> normalize_answer("  The Eiffel-Tower, in  PARIS! ")
    'eiffeltower in paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of one prediction against one gold answer, over normalized token multisets.

    As in the official SQuAD v1.1 script, no shared token gives 0, including when both sides
    normalize to nothing (``f1_score("the", "")`` is 0, while ``exact_match_score`` says 1).

    >>> f1_score("the cat sat", "a cat sat down")
    0.8
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when prediction and gold are equal after ``normalize_answer``, else 0.0.

    >>> exact_match_score("The Beatles.", "beatles")
    1.0
    """
    return float(normalize_answer(prediction) == normalize_answer(gold))


@register(
    "f1",
    description="SQuAD v1.1 token F1, best gold answer, mean (0-1)",
    per_example=functools.partial(best_over_golds, f1_score),
)
def f1(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of the best token F1 against any gold answer.

    >>> f1(["Denver Broncos", "blue"], [["Broncos", "the Denver Broncos"], ["red"]])
    0.5
    """
    return mean_best_over_golds(f1_score, predictions, references)


@register(
    "exact_match",
    description="SQuAD v1.1 exact match, any gold answer (0-1)",
    per_example=functools.partial(best_over_golds, exact_match_score),
)
def exact_match(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of examples equal to some gold answer after ``normalize_answer``.

    >>> exact_match(["The Broncos", "blue"], [["Broncos", "Denver"], ["red"]])
    0.5
    """
    return mean_best_over_golds(exact_match_score, predictions, references)


# --------------------------------------------------------------------------- ROUGE-L


@functools.cache
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    # No stemming: the default of evaluate's "rouge" metric, so numbers are comparable to it.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def _rouge_l_fmeasure(prediction: str, gold: str) -> float:
    return float(_rouge_l_scorer().score(gold, prediction)["rougeL"].fmeasure)


@register(
    "rouge_l",
    description="ROUGE-L F-measure, best reference, mean (0-1)",
    per_example=functools.partial(best_over_golds, _rouge_l_fmeasure),
)
def rouge_l(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of the best ROUGE-L F-measure (``rouge_score``, no stemmer).

    >>> round(rouge_l(["the cat sat"], [["a cat sat down", "dogs"]]), 4)
    0.5714
    """
    return mean_best_over_golds(_rouge_l_fmeasure, predictions, references)
