"""Case records: one JSON file per finished (or failed) case, written atomically.

Layout of a run::

    reports/runs/<run-id>/cases/<case-id>.json     the record
    reports/runs/<run-id>/adapters/<case-id>/      the trained adapter (PeftModel.from_pretrained)

A record (``RECORD_FORMAT`` 1) is a JSON object::

    format, run_id, case_id, case_hash, profile, method, model, task, seed,
    status: finished | failed | oom | cancelled
    reason: why it did not finish (null when finished)
    spec: the fully resolved case spec
    base_model: {load_seconds, footprint_bytes, quantization, dtype}
    training: {train_seconds, tokens_per_second, train_tokens, steps, peak_memory_bytes,
               peak_reserved_bytes, memory_method, trainable_params, total_params,
               trainable_percent, adapter_bytes, final_loss, loss_curve: [[step, loss], ...]}
    metrics: {held_out: {name: value}, seen: {name: value}}
    inference: {latency_ms_per_example, examples_per_second, peak_memory_bytes, memory_method}
    provenance: {versions, device, model_sha256, data_sha256, split_sha256, git_commit,
                 git_dirty, started_at, finished_at, host}
    adapter_dir: path of the adapter relative to the run folder, or null
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError

RECORD_FORMAT = 1
STATUSES = ("finished", "failed", "oom", "cancelled")
REQUIRED_KEYS = ("format", "run_id", "case_id", "method", "model", "task", "status")


class RecordError(PeftcoreError):
    """A record file cannot be used (corrupted, another format, missing keys)."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one.

    The temp file lives in the same folder (rename is atomic only within a filesystem) and is
    fsynced before the rename; on any error (a full disk included) it is removed and the
    original error is raised with the path named.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise OSError(err.errno, f"could not write {path}: {err.strerror}") from err
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"could not write {path}: {err.strerror}") from err
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


def record_path(run_dir: Path, case_id: str) -> Path:
    return run_dir / "cases" / f"{case_id}.json"


def write_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")  # a bug in peftcore, not user input
    if record["status"] not in STATUSES:
        raise ValueError(f"record status {record['status']!r} not in {STATUSES}")
    path = record_path(run_dir, record["case_id"])
    atomic_write_json(path, dict(record))
    return path


def read_record(path: Path) -> dict[str, Any]:
    """Parse and check one record; RecordError says what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: not a readable JSON record ({err})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return check_record(data, str(path))


def check_record(data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` itself when it is a record of ``RECORD_FORMAT`` with the required keys and a known
    status; RecordError otherwise, its message starting with ``where`` (a path, a benchmark)."""
    if data.get("format") != RECORD_FORMAT:
        raise RecordError(
            f"{where}: record format {data.get('format')!r}, this peftcore reads {RECORD_FORMAT}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise RecordError(f"{where}: missing keys {', '.join(missing)}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{where}: unknown status {data['status']!r}")
    return data


@dataclass(frozen=True)
class RunRecords:
    """The usable records of a run, and the files that were not usable (with why)."""

    run_dir: Path
    records: tuple[dict[str, Any], ...]
    problems: tuple[str, ...]


def iter_record_files(run_dir: Path) -> Iterator[Path]:
    folder = run_dir / "cases"
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def load_run(run_dir: Path) -> RunRecords:
    records, problems = [], []
    for path in iter_record_files(run_dir):
        try:
            records.append(read_record(path))
        except RecordError as err:
            problems.append(str(err))
    return RunRecords(run_dir, tuple(records), tuple(problems))
