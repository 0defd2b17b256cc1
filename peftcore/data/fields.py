"""Field mapping: a task's ``fields:`` compiled once, then applied to each record.

``fields:`` maps our name to a dotted path into a record: ``question`` (a key), ``choices.text``
(nested key; over a list of objects it is taken from each item), ``answers_text.0`` (a list
index), or a list of paths (``[sol1, sol2]`` builds a list). A path may end in filters,
``ctx | drop_bracket_tags``, applied to the text (to each item of a list); see
:mod:`peftcore.data.filters`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.data.filters import FILTERS
from peftcore.errors import SpecError
from peftcore.spec import TaskSpec, suggest

# Fields whose list of paths is flattened into one list: each path may itself give a list.
_FLATTENED = ("choices", "answers")


@dataclass(frozen=True)
class FieldPath:
    """One path of a field: its dotted parts and the filters applied to what it finds."""

    text: str  # as written in the spec, for messages
    parts: tuple[str, ...]
    filters: tuple[str, ...]


@dataclass(frozen=True)
class CompiledField:
    """One entry of ``fields:``, compiled."""

    name: str
    paths: tuple[FieldPath, ...]
    is_list: bool  # written as a list of paths


class MissingPath(Exception):
    """A path leads nowhere in a record: ``at`` is where it stops, ``keys`` what is there."""

    def __init__(self, at: str, keys: Sequence[str] | None) -> None:
        super().__init__(at)
        self.at = at
        self.keys = keys


def is_index(part: str) -> bool:
    """Whether a path part (or label text) is a list index such as ``0`` or ``-1``."""
    return part.lstrip("-").isdigit()


def walk(value: Any, parts: Sequence[str], done: int = 0) -> Any:
    """``value`` at ``parts``; a non-index part applied to a list is applied to each item.

    Raises :class:`MissingPath` when a key is absent, an index is out of range or a part
    meets a value that is neither an object nor a list.
    """
    for i in range(done, len(parts)):
        part = parts[i]
        at = ".".join(parts[: i + 1])
        if isinstance(value, Mapping):
            if part not in value:
                raise MissingPath(at, [str(k) for k in value])
            value = value[part]
        elif isinstance(value, (list, tuple)):
            if not is_index(part):
                return [walk(item, parts, i) for item in value]
            index = int(part)
            if not -len(value) <= index < len(value):
                raise MissingPath(at, [f"a list of {len(value)}"])
            value = value[index]
        else:
            raise MissingPath(at, [f"a {type(value).__name__} value"])
    return value


def compile_fields(task: TaskSpec) -> tuple[CompiledField, ...]:
    """``task.fields`` parsed; a :class:`SpecError` names a malformed path or unknown filter."""
    compiled = []
    for name, value in task.fields.items():
        if isinstance(value, (list, tuple)):
            if not value:
                raise SpecError(task.file, f"fields.{name}", "empty list of paths")
            paths = tuple(_parse_path(task, name, v) for v in value)
            compiled.append(CompiledField(name, paths, True))
        else:
            compiled.append(CompiledField(name, (_parse_path(task, name, value),), False))
    return tuple(compiled)


def _parse_path(task: TaskSpec, name: str, text: Any) -> FieldPath:
    if not isinstance(text, str) or not text.split("|")[0].strip():
        raise SpecError(
            task.file, f"fields.{name}", f"expected a dotted path like 'choices.text', got {text!r}"
        )
    head, *filters = (part.strip() for part in text.split("|"))
    for f in filters:
        if f not in FILTERS:
            raise SpecError(task.file, f"fields.{name}", f"unknown filter {f!r}; " + suggest(f, FILTERS))
    parts = tuple(head.split("."))
    if any(not p for p in parts):
        raise SpecError(task.file, f"fields.{name}", f"empty segment in path {head!r}")
    return FieldPath(text, parts, tuple(filters))


def map_record(
    task: TaskSpec, fields: Sequence[CompiledField], record: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Our name -> the value its path finds in ``record`` (filters applied).

    ``where`` names the record in messages. Raises :class:`SpecError` (naming the field) when
    a path is not in the record, finds null, or a filter meets something other than text.
    """
    mapped = {}
    for spec_field in fields:
        values = []
        for path in spec_field.paths:
            try:
                value = walk(record, path.parts)
            except MissingPath as missing:
                keys = ", ".join(missing.keys or ()) or "none"
                raise SpecError(
                    task.file,
                    f"fields.{spec_field.name}",
                    f"path {'.'.join(path.parts)!r} not found in {where} "
                    f"(nothing at {missing.at!r}; there: {keys:.300}); fix the path",
                ) from None
            if value is None:
                raise SpecError(
                    task.file,
                    f"fields.{spec_field.name}",
                    f"path {'.'.join(path.parts)!r} is null in {where}",
                )
            try:
                values.append(_apply_filters(value, path.filters, where))
            except ValueError as err:
                raise SpecError(task.file, f"fields.{spec_field.name}", str(err)) from None
        if spec_field.is_list:
            mapped[spec_field.name] = _flatten(values) if spec_field.name in _FLATTENED else values
        else:
            mapped[spec_field.name] = values[0]
    return mapped


def _apply_filters(value: Any, filters: Sequence[str], where: str) -> Any:
    if not filters:
        return value
    if isinstance(value, list):
        return [_apply_filters(v, filters, where) for v in value]
    if not isinstance(value, str):
        raise ValueError(f"{where}: filters apply to text, got {type(value).__name__} {value!r:.60}")
    for name in filters:
        value = FILTERS[name](value)
    return value


def _flatten(values: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for v in values:
        flat.extend(v if isinstance(v, list) else [v])
    return flat
