"""The spec key reference (``docs/spec-keys.md``), generated from the spec classes.

    python -m peftcore.spec.reference                         print it
    python -m peftcore.spec.reference --out docs/spec-keys.md  write it

Structure comes from the dataclasses of :mod:`peftcore.spec.types` (``dataclasses.fields``,
``typing.get_type_hints`` and the bounds in each field's metadata); a key's meaning is the comment
on its line or the comment lines just above it in the class's source file, and a block's
description is its class docstring. A field marked internal is left out. ``tests/test_docs.py``
fails when the committed page differs from what this writes, and when a field has no comment.
Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import io
import json
import re
import sys
import tokenize
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from peftcore.spec.gates import _RULE_KEYS, Compare, Expect
from peftcore.spec.types import KINDS, SECTION, SPEC_CLASS, TrainingBudget

COMMAND = "python -m peftcore.spec.reference --out docs/spec-keys.md"

# Keys whose value is a mapping the loader validates as a partial block of another class
# (peftcore.spec.cases.resolve_training builds the budget from these layers).
_PARTIAL = {"training": TrainingBudget}
# Values that parse themselves (peftcore.spec.gates): their dataclass fields are the parsed form,
# not keys of the file, so the reference gives their shape instead.
_SHAPES = {
    Expect: "mapping: metric or figure -> {min, max, methods}",
    Compare: "list of rules, each with keys " + ", ".join(_RULE_KEYS),
}
# Set from the file's name by peftcore.spec.store, which refuses it in a file.
_NAMED_BY_FILE = "name"
# The grid first, then what it combines.
_KIND_ORDER = ("profiles", "methods", "tasks", "models")
_TYPE_WORDS = {int: "integer", float: "number", str: "string", bool: "true or false", Any: "any"}


@dataclasses.dataclass(frozen=True)
class Key:
    """One key of a spec file or block, as the reference shows it."""

    name: str
    type: str
    default: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Block:
    """A spec kind (``profile``) or a nested block (``eval.judge``) and its keys."""

    title: str
    cls: type
    description: str
    keys: tuple[Key, ...]


# --------------------------------------------------------------------------- source comments


@functools.cache
def _source(path: str) -> tuple[ast.Module, dict[int, str], list[str]]:
    """A source file's syntax tree, its comments by line number and its lines."""
    text = Path(path).read_text(encoding="utf-8")
    comments = {
        token.start[0]: token.string.lstrip("#").strip()
        for token in tokenize.generate_tokens(io.StringIO(text).readline)
        if token.type == tokenize.COMMENT
    }
    return ast.parse(text), comments, text.splitlines()


def _class_source(cls: type) -> tuple[ast.ClassDef, dict[int, str], list[str]]:
    """The class's syntax node, and the comments (by line number) and lines of its file."""
    path = inspect.getsourcefile(cls)
    if path is None:
        raise ValueError(f"no source file for {cls.__qualname__}")
    tree, comments, lines = _source(path)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
            return node, comments, lines
    raise ValueError(f"class {cls.__name__} is not in {path}")


def field_comments(cls: type) -> dict[str, str]:
    """Each annotated field of ``cls`` -> its comment: the comment lines right above it (no
    blank line between) followed by the comment on its own line(s); "" when there is none."""
    node, comments, lines = _class_source(cls)
    found: dict[str, str] = {}
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        above: list[str] = []
        line = statement.lineno - 1
        while line in comments and lines[line - 1].lstrip().startswith("#"):  # a comment-only line
            above.insert(0, comments[line])
            line -= 1
        end = statement.end_lineno or statement.lineno
        trailing = [comments[n] for n in range(statement.lineno, end + 1) if n in comments]
        found[statement.target.id] = " ".join(part for part in [*above, *trailing] if part)
    return found


def class_description(cls: type) -> str:
    """The class's own docstring as one paragraph ("" without one: a dataclass's generated
    ``__doc__`` is only its signature)."""
    return " ".join((ast.get_docstring(_class_source(cls)[0]) or "").split())


# --------------------------------------------------------------------------- structure


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(options) == 1:
            return options[0], True
    return hint, False


def _nested_class(name: str, hint: Any) -> type | None:
    """The dataclass whose keys a field's value holds, if any."""
    hint, _ = _unwrap_optional(hint)
    if name in _PARTIAL:
        return _PARTIAL[name]
    if dataclasses.is_dataclass(hint) and isinstance(hint, type) and hint not in _SHAPES:
        return hint
    return None


def describe_type(hint: Any) -> str:
    """A type annotation in the words a spec writer needs.

    >>> describe_type(tuple[str, ...]), describe_type(int | None)
    ('list of strings', 'integer or null')
    """
    hint, optional = _unwrap_optional(hint)
    text = _describe(hint)
    return f"{text} or null" if optional else text


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint in _SHAPES:
        return _SHAPES[hint]
    if hint in _TYPE_WORDS:
        return _TYPE_WORDS[hint]
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in args)
    if origin is tuple:
        return f"list of {_describe(args[0])}s"
    if origin in (Mapping, dict) or hint in (Mapping, dict):
        inner = _describe(args[1]) if len(args) == 2 and args[1] is not Any else ""
        return f"mapping of {inner}s" if inner == "mapping" else "mapping"
    if dataclasses.is_dataclass(hint):
        return "block"
    raise TypeError(f"the reference cannot describe {hint!r}")  # a new kind of annotation


def _bounds(field: dataclasses.Field[Any]) -> str:
    low, high, above = (field.metadata.get(k) for k in ("min", "max", "above"))
    if low is not None and high is not None:
        return f", {_number(low)} to {_number(high)}"
    if low is not None:
        return f", at least {_number(low)}"
    if above is not None:
        return f", more than {_number(above)}"
    return ""


def _number(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def describe_default(field: dataclasses.Field[Any]) -> str:
    """The value a key takes when no file sets it ("required" when there is none)."""
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return "required"
    if isinstance(value, (Expect, Compare)):
        return "none"
    if dataclasses.is_dataclass(value):
        return "its keys' defaults"
    return "`" + json.dumps(_plain(value)) + "`"


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, tuple):
        return list(value)
    return value


def _markdown(text: str) -> str:
    """A comment as table-cell Markdown: rst ``code`` becomes `code`, pipes are escaped."""
    return text.replace("``", "`").replace("|", "\\|")


def blocks() -> list[Block]:
    """The four spec kinds in the order profile, method, task, model, then every nested block in
    the order first reached; a block reached by the same key from several places (``training``)
    appears once, and one key naming different blocks (``source``) is told apart by its kind."""
    kinds = sorted(KINDS, key=_KIND_ORDER.index)  # a new kind fails here until it is placed
    first: dict[type, tuple[str, str]] = {}  # block class -> (kind, key path) where first reached

    def walk(cls: type, kind: str, path: str) -> None:
        hints = typing.get_type_hints(cls)
        for field in _settable(cls):
            nested = _nested_class(field.name, hints[field.name])
            if nested is not None and nested not in first:
                key = f"{path}.{field.name}" if path else field.name
                first[nested] = (kind, key)
                walk(nested, kind, key)

    for kind in kinds:
        walk(SPEC_CLASS[kind], SECTION[kind], "")
    paths = [key for _, key in first.values()]
    titles = {cls: key if paths.count(key) == 1 else f"{kind}.{key}" for cls, (kind, key) in first.items()}
    out = [_block(SECTION[kind], SPEC_CLASS[kind], titles) for kind in kinds]
    return out + [_block(titles[cls], cls, titles) for cls in first]


def _settable(cls: type) -> Iterator[dataclasses.Field[Any]]:
    """The fields a spec may hold: every init field not marked internal."""
    for field in dataclasses.fields(cls):
        if field.init and not field.metadata.get("internal"):
            yield field


def _block(title: str, cls: type, titles: Mapping[type, str]) -> Block:
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    keys = []
    for field in _settable(cls):
        if field.name == _NAMED_BY_FILE and cls in SPEC_CLASS.values():
            continue
        hint = hints[field.name]
        nested = _nested_class(field.name, hint)
        if nested is not None:
            _, optional = _unwrap_optional(hint)
            kind = "keys of" if field.name in _PARTIAL else "block"
            type_text = f"{kind} [{titles[nested]}](#{slug(titles[nested])})"
            if optional:
                type_text += " or null"
        else:
            type_text = describe_type(hint) + _bounds(field)
        keys.append(Key(field.name, type_text, describe_default(field), _markdown(comments[field.name])))
    return Block(title, cls, _markdown(class_description(cls)), tuple(keys))


def slug(title: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


# --------------------------------------------------------------------------- the page


_INTRO = f"""\
<!-- Generated from peftcore/spec/types.py by `{COMMAND}`; do not edit by hand. -->

# Spec keys

Every key a spec file may set, by kind and by block: its type, the default it takes when no
file sets it, and what it means. A spec folder holds `defaults.yaml` and one folder per kind
(`profiles/`, `methods/`, `tasks/`, `models/`); each file is merged over its kind's section of
`defaults.yaml` (`profile:`, `method:`, `task:`, `model:`, and `training:` for the budget every
case starts from), so the defaults below are those of the spec classes, and the spec folder's
`defaults.yaml` may set others (the shipped one:
[benchmarks/specs/defaults.yaml](../benchmarks/specs/defaults.yaml)). Besides these keys, a file
may say `include: <other file of its kind>` to derive a variant of it; a spec is named by its
file, never by a `name:` key. Unknown keys, wrong types and values out of bounds are errors when
the spec loads, naming the file and the key.

A method's `adapter:` block goes verbatim to the peft config class of its `tuner`, so its keys
are peft's. The `training` keys of a task, a profile and a method are layered over
`defaults.yaml`'s, in that order, then the command line's. The gates (`expect:`, `compare:`) are
explained in [Gates](gates.md).
"""


def render() -> str:
    """The whole reference page as Markdown."""
    out = [_INTRO]
    for block in blocks():
        level = "##" if block.cls in SPEC_CLASS.values() else "###"
        out.append(f"{level} {block.title}\n")
        if block.cls in SPEC_CLASS.values():
            kind = next(k for k, c in SPEC_CLASS.items() if c is block.cls)
            where = f"A file under `{kind}/` in the spec folder."
            out.append(f"{block.description} {where}\n" if block.description else f"{where}\n")
        elif block.description:
            out.append(f"{block.description}\n")
        out.append("| key | type | default | meaning |\n|---|---|---|---|")
        out += [f"| `{k.name}` | {k.type} | {k.default} | {k.meaning} |" for k in block.keys]
        out.append("")
        if block.title == SECTION["models"]:
            out.append("## Blocks\n")
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m peftcore.spec.reference", description="Write the spec key reference (Markdown)."
    )
    parser.add_argument("--out", type=Path, help="the file to write (default: print it)")
    args = parser.parse_args(argv)
    text = render()
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
