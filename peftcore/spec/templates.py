"""Prompt and target templates: ``str.format`` over a task's mapped fields, checked at load.

A template may name the task's ``fields`` and the names peftcore derives per example
(``answer_text``, ``choice_list``, ``answer_index``); which of those a task may use depends on
its type. Checked when the spec loads, so a bad template is one line at collection.
"""

from __future__ import annotations

import string

from peftcore.errors import SpecError
from peftcore.spec.types import TaskSpec

DERIVED_FIELDS = ("answer_text", "choice_list", "answer_index")
_CHOICE_TYPES = ("multiple_choice", "classification")


def template_fields(template: str) -> list[str]:
    """Field names a ``str.format`` template uses (``{question}`` -> ``question``)."""
    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.append(name.split(".")[0].split("[")[0])
    return names


def check_templates(task: TaskSpec) -> None:
    """SpecError (file, key) for a template that names an unknown field or one its type lacks,
    or reaches into a field (``{instruction.upper}``, ``{choices[0]}``): ``str.format`` would
    render a bound method's repr, different in every process, into every prompt."""
    for key in ("prompt", "target"):
        template = getattr(task, key)
        try:
            raw = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as err:
            raise SpecError(task.file, key, f"malformed template: {err}") from None
        for name in raw:
            if "." in name or "[" in name:
                raise SpecError(
                    task.file,
                    key,
                    f"{{{name}}} reaches into a field; templates take plain field names: map what you "
                    "need under fields: (a dotted path such as choices.text works there)",
                )
        for name in template_fields(template):
            if name == "" or name.isdigit():
                raise SpecError(task.file, key, "use named fields like {question}, not {} or {0}")
            if name not in task.fields and name not in DERIVED_FIELDS:
                raise SpecError(
                    task.file,
                    key,
                    f"template names field {{{name}}}, which is not in fields: "
                    + ", ".join(sorted({*task.fields, *DERIVED_FIELDS})),
                )
    _check_by_type(task)


def _check_by_type(task: TaskSpec) -> None:
    """Which derived names and fields each task type needs or cannot have."""
    prompt_uses = set(template_fields(task.prompt))
    target_uses = set(template_fields(task.target))
    mapped = set(task.fields)
    if task.type in _CHOICE_TYPES:
        if "label" not in mapped:
            raise SpecError(
                task.file, "fields.label", f"a {task.type} task needs fields.label (the gold choice)"
            )
        if ("choices" in mapped) == bool(task.choices):
            raise SpecError(
                task.file,
                "choices",
                "set exactly one of fields.choices (per record) and choices (fixed words)",
            )
        if not target_uses & {"answer_text", "answer_index"}:
            raise SpecError(
                task.file,
                "target",
                "must use {answer_text}: it renders each choice, e.g. ' {answer_text}'",
            )
    elif task.type == "generation":
        if not task.target:
            raise SpecError(
                task.file, "target", "a generation task needs a target template, e.g. ' {answer}'"
            )
        if "answers" not in mapped and (prompt_uses | target_uses) & {"answer_text"}:
            raise SpecError(task.file, "target", "{answer_text} needs fields.answers (the gold answers)")
        if (prompt_uses | target_uses) & {"choice_list", "answer_index"}:
            raise SpecError(
                task.file, "target", "{choice_list} and {answer_index} exist only for choice tasks"
            )
    else:  # language_modeling
        if not task.prompt and not task.target:
            raise SpecError(
                task.file, "prompt", "a language_modeling task renders its text from the prompt template"
            )
        used = prompt_uses | target_uses
        if used & {"choice_list", "answer_index"} or ("answer_text" in used and "answers" not in mapped):
            raise SpecError(
                task.file, "prompt", "a language_modeling task has no choices or gold answer to render"
            )
    if task.type != "language_modeling" and prompt_uses & {"answer_text", "answer_index"}:
        raise SpecError(
            task.file, "prompt", "the prompt names the gold answer ({answer_text}); only target may"
        )
