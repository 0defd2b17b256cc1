"""Metrics of choice and classification tasks: accuracy and macro F1 over the chosen labels
(choice indices), and the Brier score over every choice's log-likelihood.

Each takes ``(predicted, gold)`` and raises ``ValueError`` on empty or mismatched inputs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from peftcore.score.metric_inputs import check_pairs, mean
from peftcore.score.metric_registry import register


def correct(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> list[float]:
    """1.0 where ``predicted`` equals ``gold``, else 0.0: accuracy's per-example scores.

    >>> correct([0, 2, 1], [0, 1, 1])
    [1.0, 0.0, 1.0]
    """
    check_pairs(predicted, gold)
    return [float(p == g) for p, g in zip(predicted, gold, strict=True)]


@register(
    "accuracy",
    per_example=correct,
    description="fraction of examples whose chosen label is the gold label",
)
@register(
    "accuracy_norm",
    description="accuracy when each choice's log-likelihood is divided by its length in characters "
    "(lm-evaluation-harness acc_norm)",
    per_example=correct,
)
@register(
    "accuracy_bytes",
    description="accuracy when each choice's log-likelihood is divided by its length in UTF-8 bytes "
    "(lm-evaluation-harness acc_bytes)",
    per_example=correct,
)
def accuracy(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Fraction of positions where ``predicted`` equals ``gold``.

    ``accuracy_norm`` and ``accuracy_bytes`` are this same function; the evaluator picks the
    predicted indices from length-normalized choice scores.

    >>> accuracy([0, 2, 1, 1], [0, 1, 1, 3])
    0.5
    """
    check_pairs(predicted, gold)
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


@register(
    "macro_f1",
    description="unweighted mean of per-class F1 over the classes in gold or predicted",
)
def macro_f1(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Macro-averaged F1 over every class that appears in ``gold`` or ``predicted``.

    A class only ever predicted (never gold), or never predicted, has F1 0. Written out rather
    than taken from scikit-learn: a few lines, no second import of a large library at scoring
    time, and no ``UndefinedMetricWarning`` to silence; the tests check it against
    ``sklearn.metrics.f1_score(average="macro")``.

    >>> macro_f1([1, 1, 0, 0], [1, 0, 0, 0])
    0.7333333333333334
    """
    check_pairs(predicted, gold)
    scores = []
    for label in set(gold) | set(predicted):
        true_pos = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        false_pos = sum(p == label and g != label for p, g in zip(predicted, gold, strict=True))
        false_neg = sum(p != label and g == label for p, g in zip(predicted, gold, strict=True))
        scores.append(2 * true_pos / (2 * true_pos + false_pos + false_neg))
    return mean(scores)


def brier_terms(loglikelihoods: Sequence[Sequence[float]], gold: Sequence[int]) -> list[float]:
    """Each example's squared distance between the softmax over its choices' log-likelihoods
    and the gold one-hot: the Brier score's per-example terms.

    >>> brier_terms([[0.0, 0.0], [0.0, math.log(3)]], [1, 1])
    [0.5, 0.125]
    """
    check_pairs(loglikelihoods, gold)
    terms = []
    for lls, label in zip(loglikelihoods, gold, strict=True):
        top = max(lls)
        weights = [math.exp(ll - top) for ll in lls]
        total = math.fsum(weights)
        terms.append(math.fsum((w / total - (i == label)) ** 2 for i, w in enumerate(weights)))
    return terms


@register(
    "brier_score",
    description="mean squared distance between the softmax over the choices' log-likelihoods and the "
    "gold one-hot (lm-evaluation-harness brier_score; 0 is certain and right, 2 certain and wrong)",
    per_example=brier_terms,
)
def brier_score(loglikelihoods: Sequence[Sequence[float]], gold: Sequence[int]) -> float:
    """Brier score of the choice distribution, as lm-evaluation-harness computes it.

    Unlike accuracy it moves with every change of the model's confidence, so a few steps of
    training show in it before they flip a prediction.

    >>> brier_score([[0.0, 0.0]], [1])  # 50/50 on two choices: 0.25 + 0.25
    0.5
    >>> round(brier_score([[0.0, math.log(3)]], [1]), 6)  # 25/75, right: 0.25**2 + 0.25**2
    0.125
    """
    return mean(brier_terms(loglikelihoods, gold))
