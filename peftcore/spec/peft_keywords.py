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
def _classes_in(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """class name -> (base class names, annotated field names) for every class in a file."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return {}
    found = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            fields = [
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            ]
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
    found = _config_class(tuner)
    if found is None:
        return None
    name, files = found
    index: dict[str, tuple[list[str], list[str]]] = {}
    for path in reversed(files):
        index.update(_classes_in(path))
    if _missing_bases(name, index):
        # A base from another tuner (AdaLoraConfig extends LoraConfig): index them all.
        root = _peft_root()
        assert root is not None
        for path in sorted((root / "tuners").glob("*/config.py")):
            for cls, entry in _classes_in(path).items():
                index.setdefault(cls, entry)
    fields: set[str] = set()
    pending, seen = [name], set()
    while pending:
        cls = pending.pop()
        if cls in seen or cls not in index:
            continue
        seen.add(cls)
        bases, own = index[cls]
        fields.update(own)
        pending.extend(bases)
    return name, frozenset(fields)


def _missing_bases(name: str, index: dict[str, tuple[list[str], list[str]]]) -> bool:
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
    for name in adapter:
        if name in RESERVED:
            raise SpecError(file, f"{key}.{name}", "set by peftcore itself; remove it from the spec")
        if name not in fields:
            raise SpecError(
                file, f"{key}.{name}", f"not a {cls_name} keyword (peft); " + suggest(name, fields - RESERVED)
            )
