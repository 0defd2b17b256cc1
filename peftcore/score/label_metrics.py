"""Metrics of choice and classification tasks: accuracy and macro F1 over the chosen labels
(choice indices), and the Brier score over every choice's log-likelihood.

Each takes ``(predicted, gold)`` and raises ``ValueError`` on empty or mismatched inputs.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

from peftcore.score.metric_inputs import check_pairs, mean
from peftcore.score.metric_registry import register


@register(
    "accuracy",
    higher_is_better=True,
    description="fraction of examples whose chosen label is the gold label",
    inputs="indices",
)
@register(
    "accuracy_norm",
    higher_is_better=True,
    description="accuracy when each choice's log-likelihood is divided by its length in characters "
    "(lm-evaluation-harness acc_norm)",
    inputs="indices",
)
@register(
    "accuracy_bytes",
    higher_is_better=True,
    description="accuracy when each choice's log-likelihood is divided by its length in UTF-8 bytes "
    "(lm-evaluation-harness acc_bytes)",
    inputs="indices",
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
    higher_is_better=True,
    description="unweighted mean of per-class F1 over the classes in gold or predicted",
    inputs="indices",
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


@register(
    "brier_score",
    higher_is_better=False,
    description="mean squared distance between the softmax over the choices' log-likelihoods and the "
    "gold one-hot (lm-evaluation-harness brier_score; 0 is certain and right, 2 certain and wrong)",
    inputs="choice_loglikelihoods",
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
    check_pairs(loglikelihoods, gold)
    scores = []
    for lls, label in zip(loglikelihoods, gold, strict=True):
        top = max(lls)
        weights = [math.exp(ll - top) for ll in lls]
        total = math.fsum(weights)
        scores.append(math.fsum((w / total - (i == label)) ** 2 for i, w in enumerate(weights)))
    return mean(scores)
