"""The gold answer of a mapped record: its choices, their labels, the gold index, the answers.

Multiple choice and classification records give ``choices`` (per record, or the task's fixed
``choices``), optional ``choice_labels`` and a ``label`` naming the gold choice; generation
records may give ``answers``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from peftcore.data.fields import is_index
from peftcore.errors import SpecError
from peftcore.spec import TaskSpec


def choice_texts(task: TaskSpec, mapped: Mapping[str, Any], where: str) -> list[str]:
    """The record's choices as text (``fields.choices``, else the task's fixed ``choices``).

    Raises :class:`SpecError` for fewer than two choices or a choice that is not text.
    """
    raw = mapped["choices"] if "choices" in mapped else list(task.choices)
    if isinstance(raw, str) or not isinstance(raw, list):
        raise SpecError(
            task.file, "fields.choices", f"expected a list of choices in {where}, got {raw!r:.80}"
        )
    if len(raw) < 2:
        raise SpecError(task.file, "fields.choices", f"{len(raw)} choice(s) in {where}; need at least 2")
    texts = []
    for i, choice in enumerate(raw):
        if choice is None or isinstance(choice, (dict, list)) or str(choice).strip() == "":
            raise SpecError(
                task.file, "fields.choices", f"choice {i} is {choice!r:.60} in {where}; expected text"
            )
        texts.append(str(choice))
    return texts


def choice_labels(task: TaskSpec, mapped: Mapping[str, Any], n: int, where: str) -> list[str] | None:
    """The record's ``choice_labels`` ('A', 'B', ...), or ``None`` when the task maps none.

    Raises :class:`SpecError` unless there is one label per choice.
    """
    if "choice_labels" not in mapped:
        return None
    labels = mapped["choice_labels"]
    if not isinstance(labels, list) or len(labels) != n:
        raise SpecError(
            task.file,
            "fields.choice_labels",
            f"expected a list of {n} labels (one per choice) in {where}, got {labels!r:.80}",
        )
    return [str(v).strip() for v in labels]


def letter_labels(n: int) -> list[str]:
    """Labels shown for ``n`` choices when the record has none: A, B, ... (1, 2, ... past 26)."""
    return [chr(ord("A") + i) for i in range(n)] if n <= 26 else [str(i + 1) for i in range(n)]


def resolve_label(value: Any, choices: Sequence[str], labels: Sequence[str] | None = None) -> int:
    """Index of the gold choice; ``ValueError`` says why ``value`` does not name one.

    Accepted: an int index; a bool (``False`` -> 0, ``True`` -> 1, with two choices: no/yes);
    a string that is one of ``labels`` ('A'), a digit string ('3'), one of ``choices``
    ('positive'), or 'true'/'false'.

    >>> resolve_label("B", ["x", "y"], ["A", "B"]), resolve_label("1", ["x", "y"])
    (1, 1)
    >>> resolve_label(True, ["no", "yes"]), resolve_label("positive", ["negative", "positive"])
    (1, 1)
    """
    n = len(choices)
    index: int | None = None
    if isinstance(value, bool):
        if n != 2:
            raise ValueError(f"label {value!r} is a yes/no value but there are {n} choices")
        index = int(value)
    elif isinstance(value, int):
        index = value
    elif isinstance(value, str):
        text = value.strip()
        if labels is not None and text in labels:
            index = labels.index(text)
        elif is_index(text):
            index = int(text)
        elif text in choices:
            index = list(choices).index(text)
        elif text.lower() in ("true", "false") and n == 2:
            index = int(text.lower() == "true")
        else:
            known = f"labels {', '.join(labels)}" if labels is not None else f"choices {', '.join(choices)}"
            raise ValueError(f"label {value!r} is none of the {known:.200}, nor an index")
    else:
        raise ValueError(
            f"label {value!r:.60} is a {type(value).__name__}; expected an index, a letter or a bool"
        )
    if not 0 <= index < n:
        hint = " (an unlabelled test split?)" if index < 0 else ""
        raise ValueError(f"label {value!r} is out of range for {n} choices{hint}")
    return index


def gold_answers(task: TaskSpec, mapped: Mapping[str, Any], where: str) -> list[str]:
    """The record's distinct non-empty ``answers`` as text, in order.

    Raises :class:`SpecError` when none is left.
    """
    raw = mapped["answers"]
    items = raw if isinstance(raw, list) else [raw]
    texts = (str(a) for a in items if a is not None and not isinstance(a, (dict, list)) and str(a).strip())
    answers = list(dict.fromkeys(texts))  # repeats (SQuAD lists one span per annotator) dropped, order kept
    if not answers:
        raise SpecError(task.file, "fields.answers", f"no gold answer in {where} (got {raw!r:.80})")
    return answers
