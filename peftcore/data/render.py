"""A mapped record rendered through the task's ``prompt`` / ``target`` templates.

:func:`render_example` gives the plain JSON-ready form the disk cache stores;
:func:`example_from_json` turns that form into an :class:`Example`.

Templates are ``str.format`` strings over the mapped fields plus derived names:
``answer_text`` (gold choice text, or first gold answer), ``choice_list`` ("A. ...\\nB. ..."),
``answer_index``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from peftcore.data.example import Example
from peftcore.data.labels import choice_labels, choice_texts, gold_answers, letter_labels, resolve_label
from peftcore.errors import SpecError
from peftcore.spec import TaskSpec

# Task types whose examples have choices and a gold label.
CHOICE_TYPES = ("multiple_choice", "classification")


def render_example(task: TaskSpec, uid: str, mapped: dict[str, Any], where: str) -> dict[str, Any]:
    """One example as plain JSON-ready data (the form the disk cache stores).

    Choice tasks render every choice through ``target`` (``label`` is the gold index);
    generation keeps ``answers`` (the target's text when ``fields.answers`` is not set);
    language modelling puts the rendered text in ``target`` with an empty prompt. Raises
    :class:`SpecError` for bad choices or labels, a failing template or an empty target.
    """
    values = dict(mapped)
    out: dict[str, Any] = {"uid": uid, "choices": [], "label": None, "answers": []}
    if task.type in CHOICE_TYPES:
        texts = choice_texts(task, mapped, where)
        labels = choice_labels(task, mapped, len(texts), where)
        try:
            gold = resolve_label(mapped["label"], texts, labels)
        except ValueError as err:
            raise SpecError(task.file, "fields.label", f"{err} in {where}") from None
        shown = labels if labels is not None else letter_labels(len(texts))
        values["choice_list"] = "\n".join(f"{k}. {t}" for k, t in zip(shown, texts, strict=True))
        values.update(answer_text=texts[gold], answer_index=gold)
        prompt = _format(task, "prompt", task.prompt, values, where)
        choices = [
            _format(task, "target", task.target, {**values, "answer_text": t, "answer_index": i}, where)
            for i, t in enumerate(texts)
        ]
        out.update(prompt=prompt, target=choices[gold], choices=choices, label=gold)
    else:
        answers = gold_answers(task, mapped, where) if "answers" in mapped else []
        if answers:
            values["answer_text"] = answers[0]
        prompt = _format(task, "prompt", task.prompt, values, where)
        target = _format(task, "target", task.target, values, where)
        if task.type == "language_modeling":
            prompt, target = "", prompt + target
            if not target.strip():
                raise SpecError(task.file, "prompt", f"renders empty text for {where}")
        elif not target.strip():
            raise SpecError(task.file, "target", f"renders an empty target for {where}")
        out.update(
            prompt=prompt,
            target=target,
            answers=answers or ([target.strip()] if task.type == "generation" else []),
        )
    out["fields"] = mapped
    return out


def example_from_json(data: Mapping[str, Any]) -> Example:
    """The :class:`Example` of a :func:`render_example` result (as read back from JSON)."""
    return Example(
        uid=data["uid"],
        prompt=data["prompt"],
        target=data["target"],
        choices=tuple(data["choices"]),
        label=data["label"],
        answers=tuple(data["answers"]),
        fields=data["fields"],
    )


def _format(task: TaskSpec, key: str, template: str, values: Mapping[str, Any], where: str) -> str:
    try:
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as err:
        raise SpecError(task.file, key, f"cannot render {where}: {type(err).__name__}: {err}") from None
