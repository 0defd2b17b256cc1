"""Reading spec files: YAML through the safe loader, strictly, and merging partial specs.

Every spec file is a partial override: :func:`deep_merge` lays a file's keys over what it
includes and over its kind's section of ``defaults.yaml``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from peftcore.errors import SpecError


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, reading ``2e-4`` as a number (YAML 1.2) rather than a string (YAML 1.1).

    Adapter blocks go to peft verbatim, so ``lora_dropout: 1e-1`` must arrive as a float.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError(path, None, f"cannot read file: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise SpecError(path, None, f"not UTF-8 text (byte {err.start})") from None
    try:
        data = _load_yaml(text, path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SpecError(path, None, f"invalid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SpecError(path, None, f"expected a mapping of keys at the top, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str):
            raise SpecError(path, repr(key), "keys must be strings")
    return data


_MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _load_yaml(text: str, path: Path) -> Any:
    """``yaml.load`` with the safe loader, refusing a key written twice in one mapping (YAML
    would silently keep the last, dropping a whole ``training:`` block written further up)."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, path)
        _reject_duplicate_keys(node, path, (), 0, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


# A spec of the shipped ones expands to at most a few hundred values; aliases that multiply a
# document beyond this ("billion laughs": each level an alias list of the one below) are refused
# before anything walks the expanded values, which would take exponential time.
_MAX_EXPANDED_VALUES = 10_000


def _check_expansion(root: yaml.Node, path: Path) -> None:
    """SpecError for a document whose aliases expand it past ``_MAX_EXPANDED_VALUES`` values or
    ``_MAX_DEPTH`` levels, or for an alias inside the structure it names (``a: &x [*x]``).

    Measured on the composed nodes, where an alias is one shared node: each node's expanded size
    and depth is computed once, so this takes time linear in the file, whatever the aliases.
    """
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded values, depth)
    open_nodes: set[int] = set()

    def measure(node: yaml.Node, level: int) -> tuple[int, int]:
        known = sizes.get(id(node))
        if known is None and level <= _MAX_DEPTH:
            known = expand(node, level)
        if known is None or level + known[1] > _MAX_DEPTH:
            raise SpecError(path, None, f"nested more than {_MAX_DEPTH} levels deep")
        return known

    def expand(node: yaml.Node, level: int) -> tuple[int, int]:
        if id(node) in open_nodes:
            raise SpecError(path, None, "a YAML alias refers to a structure that contains it")
        open_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            children = []
        count, depth = 1, 0
        for child in children:
            child_count, child_depth = measure(child, level + 1)
            count, depth = count + child_count, max(depth, child_depth + 1)
        if count > _MAX_EXPANDED_VALUES:
            line = node.start_mark.line + 1
            raise SpecError(
                path,
                None,
                f"YAML aliases nested from line {line} expand to more than {_MAX_EXPANDED_VALUES:,} "
                "values (a 'billion laughs'); expected a spec with its values written out",
            )
        open_nodes.discard(id(node))
        sizes[id(node)] = (count, depth)
        return count, depth

    measure(root, 0)


def _reject_duplicate_keys(
    node: yaml.Node, path: Path, where: tuple[str, ...], depth: int, done: set[int]
) -> None:
    if id(node) in done:  # an alias: already checked where its anchor is
        return
    done.add(id(node))
    if depth > _MAX_DEPTH:
        raise SpecError(path, None, f"nested more than {_MAX_DEPTH} levels deep")
    if isinstance(node, yaml.MappingNode):
        first_line: dict[tuple[str, str], int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else "?"
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != _MERGE_TAG:
                ident, line = (key_node.tag, key_node.value), key_node.start_mark.line + 1
                if ident in first_line:
                    first = first_line[ident]
                    lines = f"on line {line}" if line == first else f"at lines {first} and {line}"
                    raise SpecError(path, ".".join((*where, key)), f"written twice, {lines}")
                first_line[ident] = line
            _reject_duplicate_keys(value_node, path, (*where, key), depth + 1, done)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, path, where, depth + 1, done)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged
