"""Which keywords a peft config class accepts, found without importing peft.

Importing peft imports torch (seconds), and specs are validated at collection time, which must
stay torch-free. peft's config classes are plain dataclasses, so their fields can be read from
the installed source with ``ast``; that stays true to whatever peft version is installed, where a
hand-kept table would drift. When peft's source cannot be read (zip install, unusual layout) the
check is skipped here and happens when the config class is built, still before training.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError
from peftcore.spec.schema import suggest

SPECIAL_TUNERS = ("none", "full")
# Keys of the base PeftConfig that the engine sets itself; a spec must not.
RESERVED = {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode"}


@functools.cache
def _peft_root() -> Path | None:
    spec = importlib.util.find_spec("peft")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def available_tuners() -> tuple[str, ...]:
    root = _peft_root()
    if root is None:
        return ()
    return tuple(sorted(p.parent.name for p in (root / "tuners").glob("*/config.py")))


@functools.cache
def _classes_in(path: Path) -> dict[str, tuple[list[str], dict[str, ast.expr]]]:
    """class name -> (base class names, annotated field -> its annotation) for every class in a file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            fields = {
                stmt.target.id: stmt.annotation
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
            found[node.name] = (bases, fields)
    return found


def _config_class(tuner: str) -> tuple[str, list[Path]] | None:
    """The config class name for ``tuner`` and the files its bases may live in."""
    root = _peft_root()
    if root is None:
        return None
    path = root / "tuners" / tuner / "config.py"
    classes = _classes_in(path)
    wanted = tuner.replace("_", "").lower() + "config"
    names = [n for n in classes if n.lower() == wanted]
    if not names:
        names = [n for n, (bases, _) in classes.items() if any(b.endswith("Config") for b in bases)]
    if not names:
        return None
    return names[0], [path, root / "config.py", root / "tuners" / "lycoris_utils.py"]


@functools.cache
def config_fields(tuner: str) -> tuple[str, frozenset[str]] | None:
    """(class name, every keyword it accepts, inherited ones included), or None if unknown."""
    found = config_annotations(tuner)
    return None if found is None else (found[0], frozenset(found[1]))


@functools.cache
def config_annotations(tuner: str) -> tuple[str, dict[str, ast.expr]] | None:
    """(class name, keyword -> its annotation, inherited ones included; the class's own win)."""
    found = _config_class(tuner)
    if found is None:
        return None
    name, files = found
    index: dict[str, tuple[list[str], dict[str, ast.expr]]] = {}
    for path in reversed(files):
        index.update(_classes_in(path))
    if _missing_bases(name, index):
        # A base from another tuner (AdaLoraConfig extends LoraConfig): index them all.
        root = _peft_root()
        assert root is not None
        for path in sorted((root / "tuners").glob("*/config.py")):
            for cls, entry in _classes_in(path).items():
                index.setdefault(cls, entry)
    fields: dict[str, ast.expr] = {}
    pending, seen = [name], set()
    while pending:
        cls = pending.pop(0)  # breadth first: a subclass's annotation wins over its base's
        if cls in seen or cls not in index:
            continue
        seen.add(cls)
        bases, own = index[cls]
        for field, annotation in own.items():
            fields.setdefault(field, annotation)
        pending.extend(bases)
    return name, fields


def _missing_bases(name: str, index: dict[str, tuple[list[str], dict[str, ast.expr]]]) -> bool:
    pending, seen = [name], set()
    while pending:
        cls = pending.pop()
        if cls in seen:
            continue
        seen.add(cls)
        if cls not in index:
            if cls.endswith("Config"):
                return True
            continue
        pending.extend(index[cls][0])
    return False


def check_adapter(
    tuner: str,
    adapter: Mapping[str, Any],
    file: Path | None,
    *,
    key: str = "adapter",
    tuner_key: str = "tuner",
) -> None:
    """Raise SpecError for an unknown tuner or a keyword its peft config class does not take.

    ``key`` and ``tuner_key`` are where the keywords and the tuner name sit in the spec file
    (a model's ``adapter_overrides.vblora`` holds both).
    """
    if tuner in SPECIAL_TUNERS:
        if adapter:
            raise SpecError(file, key, f"tuner {tuner!r} takes no adapter block")
        return
    tuners = available_tuners()
    if not tuners:
        return  # peft's source is not readable here; the config class checks it later
    if tuner not in tuners:
        raise SpecError(
            file, tuner_key, f"unknown tuner {tuner!r}; " + suggest(tuner, (*SPECIAL_TUNERS, *tuners))
        )
    found = config_fields(tuner)
    if found is None:
        return
    cls_name, fields = found
    annotations = (config_annotations(tuner) or ("", {}))[1]
    for name, value in adapter.items():
        if name in RESERVED:
            raise SpecError(file, f"{key}.{name}", "set by peftcore itself; remove it from the spec")
        if name not in fields:
            raise SpecError(
                file, f"{key}.{name}", f"not a {cls_name} keyword (peft); " + suggest(name, fields - RESERVED)
            )
        expected = _mismatch(annotations.get(name), value, name)
        if expected is not None:
            raise SpecError(file, f"{key}.{name}", f"{cls_name} takes {expected}, got {value!r:.60}")
        problem = _out_of_range(tuner, name, value)
        if problem is not None:
            raise SpecError(file, f"{key}.{name}", problem)


# --------------------------------------------------------------------------- values

_WORDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}


def _accepts(annotation: ast.expr | None, value: Any) -> bool | None:
    """Whether ``value`` (parsed YAML) fits ``annotation`` (peft's source); None: cannot tell."""
    if annotation is None:
        return None
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return value is None
    if isinstance(annotation, ast.Name):
        name = annotation.id
        if name == "bool":
            return isinstance(value, bool)
        if name == "int":
            return isinstance(value, int) and not isinstance(value, bool)
        if name == "float":
            return isinstance(value, (int, float)) and not isinstance(value, bool)
        if name == "str":
            return isinstance(value, str)
        return None
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):  # X | Y
        options = [annotation.left, annotation.right]
    elif isinstance(annotation, ast.Subscript) and isinstance(annotation.value, (ast.Name, ast.Attribute)):
        head = annotation.value.id if isinstance(annotation.value, ast.Name) else annotation.value.attr
        inner = annotation.slice
        args = list(inner.elts) if isinstance(inner, ast.Tuple) else [inner]
        if head == "Optional":
            options = [*args, ast.Constant(None)]
        elif head == "Union":
            options = args
        elif head in ("list", "List"):
            if not isinstance(value, (list, tuple)):
                return False
            items = [_accepts(args[0], item) for item in value]
            return False if False in items else (None if None in items else True)
        elif head in ("dict", "Dict"):
            return isinstance(value, Mapping)
        elif head == "Literal":
            return value in [a.value for a in args if isinstance(a, ast.Constant)]
        else:
            return None
    else:
        return None
    results = [_accepts(option, value) for option in options]
    if any(r is True for r in results):
        return True
    return None if any(r is None for r in results) else False


def _mismatch(annotation: ast.expr | None, value: Any, name: str = "") -> str | None:
    """What the annotation wants, when ``value`` surely does not fit it; else None.

    An ``alpha`` may be any number (peft divides by it; ``lora_alpha: 16.0`` is common usage
    though annotated ``int``)."""
    if "alpha" in name and isinstance(value, (int, float)) and not isinstance(value, bool):
        return None
    if _accepts(annotation, value) is not False or annotation is None:
        return None
    return _WORDS.get(ast.unparse(annotation), ast.unparse(annotation))


# Ranges peft enforces only when it builds the layers (or not at all), after the model loaded.
_POSITIVE = {
    "lora": ("r",),
    "adalora": ("init_r", "target_r"),
    "loha": ("r",),
    "lokr": ("r",),
    "vera": ("r",),
    "vblora": ("r", "num_vectors", "vector_length"),
    "prompt_tuning": ("num_virtual_tokens",),
    "prefix_tuning": ("num_virtual_tokens",),
}


def _out_of_range(tuner: str, name: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if name.endswith("dropout") and not 0 <= value < 1:
        return f"a dropout probability is at least 0 and below 1, got {value}"
    if name in _POSITIVE.get(tuner, ()) and value < 1:
        return f"expected at least 1, got {value}"
    return None
