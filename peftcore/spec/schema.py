"""Turn parsed YAML into frozen dataclasses, checking every key and type on the way.

Written by hand because the validation libraries (pydantic, cattrs) would add a dependency and
an import cost to collection for what is ~100 lines here, and their error messages do not name
the spec file. The dataclass field annotations are the schema: the same class documents a spec
and validates it.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union

from peftcore.errors import SpecError, suggest

_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def freeze(value: Any) -> Any:
    """Read-only view of plain YAML data: dicts become mappingproxies, lists tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def flat(value: Any, prefix: str) -> dict[str, Any]:
    """Plain nested data as one level of dotted keys: what a table column or a tracker's config
    key can hold. Lists become JSON text (hashable, so a DataFrame can group by them).

    >>> flat({"method": {"name": "lora", "adapter": {"target_modules": ["q", "v"]}}}, "spec")
    {'spec.method.name': 'lora', 'spec.method.adapter.target_modules': '["q", "v"]'}
    """
    import json

    out: dict[str, Any] = {}

    def walk(item: Any, key: str) -> None:
        if isinstance(item, Mapping):
            for name, inner in item.items():
                walk(inner, f"{key}.{name}")
        elif isinstance(item, (list, tuple)):
            out[key] = json.dumps(item, sort_keys=True, default=str)
        else:
            out[key] = item

    walk(value, prefix)
    return out


def plain(value: Any) -> Any:
    """JSON-ready copy of a spec object (dataclasses, mappings, tuples, paths).

    A parsed value that keeps what the file said (``to_spec()``, e.g. an ``expect:`` block) is
    written as the file wrote it, so records and hashes show the spec, not its parsed form.
    """
    if hasattr(value, "to_spec") and not isinstance(value, type):
        return value.to_spec()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: plain(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if not f.metadata.get("internal")
        }
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def build(cls: type, data: Any, file: str | Path | None, prefix: str = "") -> Any:
    """Validate ``data`` against dataclass ``cls`` and return an instance.

    Unknown keys, missing required keys and wrong types raise :class:`SpecError` naming
    ``file`` and the dotted key path.
    """
    if not isinstance(data, Mapping):
        raise SpecError(file, prefix or None, f"expected a mapping, got {_describe(data)}")
    hints, fields = _schema(cls)
    for key in data:
        if key not in fields:
            raise SpecError(file, _join(prefix, str(key)), "unknown key; " + suggest(str(key), fields))
    kwargs = {}
    for name, field in fields.items():
        key = _join(prefix, name)
        if name in data:
            kwargs[name] = convert(hints[name], data[name], file, key)
            _check_range(field, kwargs[name], file, key)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise SpecError(file, key, "required key is missing")
    return cls(**kwargs)


def check_partial(cls: type, data: Mapping[str, Any], file: str | Path | None, prefix: str) -> None:
    """Check the keys ``data`` gives against ``cls`` (a partial spec: required keys may be absent).

    For ``defaults.yaml``: a wrong value there is reported there, not in every spec that inherits
    it. Unknown keys and wrong types or ranges raise :class:`SpecError`.
    """
    hints, fields = _schema(cls)
    for key, value in data.items():
        where = _join(prefix, str(key))
        if key not in fields:
            raise SpecError(file, where, "unknown key; " + suggest(str(key), fields))
        converted = convert(hints[key], value, file, where)
        _check_range(fields[key], converted, file, where)


@functools.cache
def _schema(cls: type) -> tuple[dict[str, Any], dict[str, dataclasses.Field[Any]]]:
    """Resolved annotations and the settable fields of a spec class (resolving is the slow part)."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init and not f.metadata.get("internal")}
    return hints, fields


def _check_range(field: dataclasses.Field[Any], value: Any, file: str | Path | None, key: str) -> None:
    """Bounds a field declares in its metadata (``min``/``max`` inclusive, ``above`` exclusive);
    NaN is never in range."""
    low, high, above = field.metadata.get("min"), field.metadata.get("max"), field.metadata.get("above")
    if (low is None and high is None and above is None) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise SpecError(file, key, f"expected a finite number, got {value}")
    if above is not None and not value > above:
        raise SpecError(file, key, f"expected more than {above}, got {value}")
    if low is not None and value < low:
        raise SpecError(file, key, f"expected at least {low}, got {value}")
    if high is not None and value > high:
        raise SpecError(file, key, f"expected at most {high}, got {value}")


def at_least(low: float, default: Any) -> Any:
    """A dataclass field with a lower bound that :func:`build` checks."""
    return dataclasses.field(default=default, metadata={"min": low})


def above(low: float, default: Any) -> Any:
    """A dataclass field that must be more than ``low`` (a learning rate of 0 trains nothing)."""
    return dataclasses.field(default=default, metadata={"above": low})


def between(low: float, high: float, default: Any) -> Any:
    """A dataclass field with inclusive bounds that :func:`build` checks."""
    return dataclasses.field(default=default, metadata={"min": low, "max": high})


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def convert(hint: Any, value: Any, file: str | Path | None, key: str) -> Any:
    """Check ``value`` against the type annotation ``hint``; return it converted."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return freeze(value)
    if isinstance(hint, type) and hasattr(hint, "from_spec"):
        return hint.from_spec(value, file, key)  # a value that parses itself (spec.gates)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        if len(options) == 1:  # Optional[X]: X's own error, with its own key
            return convert(options[0], value, file, key)
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return convert(option, value, file, key)
            except SpecError as err:
                errors.append(err.expected)
        raise SpecError(file, key, " or ".join(dict.fromkeys(errors)))
    if origin is Literal:
        if value in args:
            return value
        raise SpecError(file, key, f"expected one of {', '.join(map(str, args))}; got {_describe(value)}")
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, file, key)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise SpecError(file, key, f"expected a list, got {_describe(value)}")
        item = args[0]
        return tuple(convert(item, v, file, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict, typing.Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise SpecError(file, key, f"expected a mapping, got {_describe(value)}")
        value_hint = args[1] if len(args) == 2 else Any
        return types.MappingProxyType(
            {str(k): convert(value_hint, v, file, f"{key}.{k}") for k, v in value.items()}
        )
    if hint is float:
        # YAML reads 2e-4 as a string (YAML 1.1 wants a dot); accept what a person means.
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise SpecError(file, key, f"expected a number, got {_describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SpecError(file, key, f"expected an integer, got {_describe(value)}")
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise SpecError(file, key, f"expected true or false, got {_describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise SpecError(file, key, f"expected a string, got {_describe(value)}")
    raise TypeError(f"schema.convert does not handle {hint!r}")  # a bug in a spec class, not in a spec
