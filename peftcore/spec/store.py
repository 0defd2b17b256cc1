"""A spec directory: every spec file under one folder, parsed on demand, validated, cached.

A spec directory holds ``defaults.yaml`` and one folder per kind (``models/``, ``methods/``,
``tasks/``, ``profiles/``). Each file is a partial override of its kind's section in
``defaults.yaml``; ``include: other.yaml`` (or just ``other``) derives a variant from another
file of the same kind; a profile may declare method variants inline (``variants:``).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError
from peftcore.spec.checks import check_report_to, check_spec, check_trainer_name
from peftcore.spec.loader import deep_merge, read_yaml
from peftcore.spec.schema import build, check_partial, plain, suggest
from peftcore.spec.types import SECTION, SPEC_CLASS, MethodSpec, ProfileSpec, TrainingBudget


class SpecStore:
    """Every spec under one directory, parsed on demand and cached.

    ``names(kind)`` lists files without parsing them (cheap, for markers); ``get(kind, name)``
    parses, resolves ``include:`` and validates.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "defaults.yaml").is_file():
            raise SpecError(self.root, None, "not a spec directory: defaults.yaml is missing")
        self.defaults = read_yaml(self.root / "defaults.yaml")
        allowed = {*SECTION.values(), "training"}
        for key, value in self.defaults.items():
            if key not in allowed:
                raise SpecError(self.root / "defaults.yaml", key, "unknown section; " + suggest(key, allowed))
            if not isinstance(value, Mapping):
                raise SpecError(self.root / "defaults.yaml", key, "expected a mapping")
        defaults_file = self.root / "defaults.yaml"
        build(TrainingBudget, self.defaults.get("training", {}), defaults_file, "training")
        for kind in ("optimizer", "lr_scheduler"):
            check_trainer_name(kind, self.defaults.get("training", {}).get(kind), defaults_file)
        check_report_to(self.defaults.get("training", {}).get("report_to"), defaults_file)
        for kind, section in SECTION.items():
            # A mistake here would otherwise surface as an error in every spec of the kind,
            # blamed on that spec's file.
            given = dict(self.defaults.get(section, {}))
            if "name" in given:
                raise SpecError(
                    defaults_file, f"{section}.name", "a spec is named by its file; remove this key"
                )
            check_partial(SPEC_CLASS[kind], given, defaults_file, section)
        self._cache: dict[tuple[str, str], Any] = {}

    # -- discovery
    @functools.cache  # noqa: B019 - one store per session, the cache lives as long as it
    def names(self, kind: str) -> tuple[str, ...]:
        folder = self.root / kind
        if not folder.is_dir():
            return ()
        return tuple(sorted(p.stem for p in folder.glob("*.yaml")))

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / f"{name}.yaml"

    # -- loading
    def get(self, kind: str, name: str) -> Any:
        key = (kind, name)
        if key not in self._cache:
            path = self.path(kind, name)
            if not _is_plain_name(name) or not path.is_file():
                singular = SECTION[kind]
                raise SpecError(
                    None, None, f"unknown {singular} {name!r}; " + suggest(name, self.names(kind))
                )
            raw = self._resolve(kind, path, stack=())
            self._cache[key] = self.validate(kind, name, raw, path)
        return self._cache[key]

    def all(self, kind: str) -> list[Any]:
        return [self.get(kind, name) for name in self.names(kind)]

    def validate(self, kind: str, name: str, raw: Mapping[str, Any], path: Path) -> Any:
        data = deep_merge(self.defaults.get(SECTION[kind], {}), raw)
        data.pop("include", None)
        data["name"] = name
        spec = build(SPEC_CLASS[kind], data, path)
        spec = dataclasses.replace(spec, file=path)
        check_spec(kind, spec)
        return spec

    def _resolve(self, kind: str, path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
        """The file's own keys merged over whatever it includes (recursively)."""
        path = path.resolve()
        if path in stack:
            chain = " -> ".join(p.name for p in (*stack, path))
            raise SpecError(stack[-1], "include", f"include cycle: {chain}")
        raw = read_yaml(path)
        if "name" in raw:
            raise SpecError(path, "name", f"a spec is named by its file ({path.stem}); remove this key")
        include = raw.get("include")
        if include is None:
            return raw
        if not isinstance(include, str) or not include:
            raise SpecError(path, "include", f"expected the name or file of another {SECTION[kind]} spec")
        target = self._include_path(kind, path, include)
        base = self._resolve(kind, target, (*stack, path))
        base.pop("include", None)
        return deep_merge(base, raw)

    def _include_path(self, kind: str, path: Path, include: str) -> Path:
        candidates = [path.parent / include]
        if not include.endswith((".yaml", ".yml")):
            candidates.append(path.parent / f"{include}.yaml")
            candidates.append(self.root / kind / f"{include}.yaml")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise SpecError(path, "include", f"no spec {include!r}; " + suggest(include, self.names(kind)))

    def method_variant(self, profile: ProfileSpec, name: str) -> MethodSpec:
        """A method declared inline in a profile's ``variants:`` (e.g. one point of a rank sweep)."""
        file = Path(profile.file) if profile.file else self.root / "profiles"
        where = f"variants.{name}"
        declared = profile.variants[name]
        if not isinstance(declared, Mapping):
            raise SpecError(file, where, f"expected a mapping of method keys, got {declared!r:.60}")
        raw = plain(declared)
        if "name" in raw:
            raise SpecError(file, f"{where}.name", "a variant is named by its key; remove this key")
        include = raw.pop("include", None)
        if include is not None:
            if not isinstance(include, str) or not include:
                raise SpecError(file, f"{where}.include", "expected a method name")
            try:
                target = self._include_path("methods", self.root / "methods" / f"{name}.yaml", include)
            except SpecError as err:
                raise SpecError(file, f"{where}.include", err.expected) from None
            base = self._resolve("methods", target, ())  # errors there name the included file
            base.pop("include", None)
            raw = deep_merge(base, raw)
        try:
            return self.validate("methods", name, raw, file)
        except SpecError as err:
            key = f"{where}.{err.key}" if err.key else where
            raise SpecError(file, key, err.expected) from None


def _is_plain_name(name: str) -> bool:
    """A spec name is a file stem: no folders, no hidden or parent entries."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")
