"""Metrics over the number in an answer, GSM8K-style: exact match, absolute difference, and the
share of answers holding no number. Each takes ``(predictions, references)`` of strings; a
gold answer is a number or a worked solution ending in ``#### N``."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from peftcore.score.metric_inputs import Reference, check_pairs, gold_answers, mean
from peftcore.score.metric_registry import register

_NUMBER = re.compile(
    r"""
    (?:(?<![\w)\]])(?P<sign>[-+\u2212]))?    # a sign, unless glued to a word: 3-5 is a range
    (?:\$\s?)?                             # currency: -$5, $ 5
    (?:
        (?P<grouped>[0-9]{1,3}(?:,[0-9]{3})+)(?![0-9])   # 1,234,567
      | (?P<plain>[0-9]+)
      | (?<![0-9.])(?=\.[0-9])                          # .5
    )
    (?P<fraction>\.[0-9]+)?                # a trailing period without digits is not a fraction
    """,
    re.VERBOSE,
)


def _numbers(text: str) -> list[float]:
    found = []
    for match in _NUMBER.finditer(text):
        digits = (match["grouped"] or match["plain"] or "0").replace(",", "")
        value = float(digits + (match["fraction"] or ""))
        if match["sign"] in ("-", "\u2212"):
            value = -value
        if math.isfinite(value):
            found.append(value)
    return found


def extract_number(text: str) -> float | None:
    """The answer number of a GSM8K-style text, or None when it holds no number.

    After a ``####`` marker the first number following the first marker is taken; without a
    marker (or with nothing numeric after it) the last number in the text. Thousands commas,
    a leading sign, ``$`` and a sentence-ending period are understood; ``3-5`` reads as 3 and 5,
    not -5. Numbers too large for a float are ignored. Never raises on a string.

    >>> extract_number("She pays 3 * $1,250 = $3,750.\\n#### 3,750")
    3750.0
    >>> extract_number("The answer is -2.5.")
    -2.5
    >>> extract_number("no idea") is None
    True
    """
    _, marker, after = text.partition("####")
    if marker:
        numbers = _numbers(after)
        if numbers:
            return numbers[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def _gold_numbers(reference: Reference, index: int) -> list[float]:
    return [n for n in map(extract_number, gold_answers(reference, index)) if n is not None]


def number_matches(predictions: Sequence[str], references: Sequence[Reference]) -> list[float]:
    """1.0 where the answer's ``extract_number`` equals some gold answer's, else 0.0.

    >>> number_matches(["so 72 clips.", "none"], ["#### 72", "0"])
    [1.0, 0.0]
    """
    check_pairs(predictions, references)
    hits = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = _gold_numbers(ref, i)
        value = extract_number(pred)
        hits.append(float(value is not None and value in golds))
    return hits


@register(
    "number_exact_match",
    description="fraction of answers whose extracted number equals a gold number (GSM8K)",
    per_example=number_matches,
)
def number_exact_match(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of examples whose ``extract_number`` equals that of some gold answer.

    A prediction without a number never matches. Numbers compare as parsed floats, so
    ``"72.0"`` matches ``"72"``.

    >>> number_exact_match(["so 72 clips.", "#### 5", "none"], ["#### 72", "6", "0"])
    0.3333333333333333
    """
    return mean(number_matches(predictions, references))


def number_parse_counts(predictions: Sequence[str], references: Sequence[Reference]) -> dict[str, int]:
    """How many examples ``abs_diff`` scores, and why the others are left out.

    >>> number_parse_counts(["7", "none", "3"], ["8", "9", "n/a"])
    {'scored': 1, 'unparseable_predictions': 1, 'unparseable_references': 1}
    """
    check_pairs(predictions, references)
    counts = {"scored": 0, "unparseable_predictions": 0, "unparseable_references": 0}
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = _gold_numbers(ref, i)
        if extract_number(pred) is None:
            counts["unparseable_predictions"] += 1
        elif not golds:
            counts["unparseable_references"] += 1
        else:
            counts["scored"] += 1
    return counts


def abs_diffs(predictions: Sequence[str], references: Sequence[Reference]) -> list[float]:
    """Each example's |predicted - closest gold| number; nan where either side has none.

    >>> abs_diffs(["7 apples", "no idea"], ["#### 10", "4"])
    [3.0, nan]
    """
    check_pairs(predictions, references)
    diffs = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        value = extract_number(pred)
        golds = _gold_numbers(ref, i)
        diffs.append(min(abs(value - gold) for gold in golds) if value is not None and golds else math.nan)
    return diffs


@register(
    "abs_diff",
    description="mean |predicted - gold| number over answers that contain a number (see "
    "number_unparseable_rate for the others); nan when none does",
    per_example=abs_diffs,
)
def abs_diff(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean absolute difference between predicted and closest gold number.

    Examples whose prediction (or every gold) holds no number are left out rather than given
    an invented penalty: there is no defensible distance to "no answer". The share left out is
    reported by ``number_unparseable_rate`` (counts by ``number_parse_counts``); when no example
    can be scored the result is ``nan``.

    >>> abs_diff(["7 apples", "no idea", "-1"], ["#### 10", "4", "1"])
    2.5
    """
    diffs = [d for d in abs_diffs(predictions, references) if not math.isnan(d)]
    return mean(diffs) if diffs else math.nan


def unparseable(predictions: Sequence[str], references: Sequence[Reference]) -> list[float]:
    """1.0 where the answer holds no number (references only checked for length)."""
    check_pairs(predictions, references)
    return [float(extract_number(pred) is None) for pred in predictions]


@register(
    "number_unparseable_rate",
    description="fraction of answers with no number in them (the ones abs_diff leaves out)",
    per_example=unparseable,
)
def number_unparseable_rate(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of predictions ``extract_number`` finds no number in (references only checked
    for length, to keep the common signature).

    >>> number_unparseable_rate(["7", "I do not know"], ["7", "8"])
    0.5
    """
    check_pairs(predictions, references)
    return sum(extract_number(pred) is None for pred in predictions) / len(predictions)
