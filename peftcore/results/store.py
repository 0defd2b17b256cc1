"""The run store: run folders of case records, and the one definition of "the newest".

Layout::

    <results>/<run-id>/cases/<case-id>.json     a record (peftcore.vocab.record), written atomically
    <results>/<run-id>/adapters/<case-id>/      its trained adapter (PeftModel.from_pretrained)
    <results>/<run-id>/grid/<K>-of-<N>.json      what each session (shard) selected (results.manifest)

Everything that reads stored results reads them here: resuming and adopting cached cases
(:class:`History`), the report (:func:`list_runs`, :func:`read_run`), the planner's quality
ladder and baselines (:func:`newest_per_case`). "Newest" means one thing everywhere: the later
``provenance.finished_at`` (ISO 8601 in UTC), then the later run folder name; a run is as new as
its newest record. Unreadable, older-format and unfinished records are never reused; unreadable
and older-format ones are reported. Dot-prefixed folders and files are writes in progress.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from peftcore.errors import PeftcoreError
from peftcore.results.manifest import GridStatus, grid_status
from peftcore.storage import atomic_write_json
from peftcore.vocab.record import (
    REQUIRED_KEYS,
    STATUSES,
    CaseKey,
    Record,
    RecordError,
    case_key,
    check_record,
    finished_at,
)

__all__ = [
    "Earlier",
    "History",
    "Run",
    "RunError",
    "adopt",
    "list_runs",
    "newest_per_case",
    "read_record",
    "read_run",
    "record_path",
    "resolve_run",
    "write_record",
]


class RunError(PeftcoreError):
    """No such run, or a folder that is not one."""


# --------------------------------------------------------------------------- one record


def record_path(run_dir: Path, case_id: str) -> Path:
    return run_dir / "cases" / f"{case_id}.json"


def adapter_path(run_dir: Path, case_id: str) -> Path:
    return run_dir / "adapters" / case_id


def write_record(run_dir: Path, record: Mapping[str, Any]) -> Path:
    """Write ``record`` (atomically) as ``<run_dir>/cases/<case_id>.json``; return the path."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"record lacks {missing}")  # a bug in peftcore, not user input
    if record["status"] not in STATUSES:
        raise ValueError(f"record status {record['status']!r} not in {STATUSES}")
    path = record_path(run_dir, record["case_id"])
    atomic_write_json(path, dict(record))
    return path


def read_record(path: Path) -> Record:
    """Parse and check one record; RecordError says what is wrong with it."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecordError(f"{path}: not a readable JSON record ({err})") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: expected a JSON object")
    return check_record(data, str(path))


def iter_record_files(run_dir: Path) -> Iterator[Path]:
    folder = run_dir / "cases"
    if folder.is_dir():
        yield from sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def newer(record: Mapping[str, Any], run_id: str) -> tuple[str, str]:
    """The sort key that defines "newest": (finished_at, run id)."""
    return (finished_at(record), run_id)


# --------------------------------------------------------------------------- runs


@dataclass(frozen=True)
class Run:
    """The usable records of a run folder, and the record files that could not be read."""

    run_dir: Path
    records: tuple[Record, ...]
    problems: tuple[str, ...]  # record files that could not be read, each "path: why"
    # What the sessions that wrote the run selected, and which of it has no record (read by
    # read_run for the report; None for a run without grid manifests).
    grid: GridStatus | None = None
    # A search's trials and default runs (vocab.record.is_search_only), when a reader sets them
    # apart from ``records`` (the report: for its Tuning section only); empty otherwise.
    search: tuple[Record, ...] = ()

    @property
    def run_id(self) -> str:
        return self.run_dir.name


def load_run(run_dir: Path) -> Run:
    """Every record file of a run; an unreadable one is listed in ``problems``, not raised."""
    records, problems = [], []
    for path in iter_record_files(run_dir):
        try:
            records.append(read_record(path))
        except RecordError as err:
            problems.append(str(err))
    return Run(run_dir, tuple(records), tuple(problems))


def read_run(run_dir: Path) -> Run:
    """The records of a run that must have some; RunError when it has none readable."""
    if not run_dir.is_dir():
        raise RunError(f"run folder {run_dir} does not exist")
    if not (run_dir / "cases").is_dir():
        raise RunError(f"{run_dir} is not a run folder (it has no cases/)")
    run = load_run(run_dir)
    if not run.records:
        why = f"; {len(run.problems)} unreadable, first: {run.problems[0]}" if run.problems else ""
        raise RunError(f"run {run_dir} has no readable case records{why}")
    grid = grid_status(run_dir, (str(r["case_id"]) for r in run.records))
    return Run(run.run_dir, run.records, run.problems + (grid.problems if grid else ()), grid)


def _run_dirs(results_dir: Path) -> list[Path]:
    if not results_dir.is_dir():
        return []
    return sorted(p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def run_time(run_dir: Path) -> str:
    """When a run last finished a record; for a run whose records say nothing, when its
    ``cases/`` folder last changed (ISO 8601 in UTC either way, so the two compare)."""
    times = [finished_at(record) for record in load_run(run_dir).records]
    latest = max(times, default="")
    if latest:
        return latest
    stamp = (run_dir / "cases").stat().st_mtime
    return dt.datetime.fromtimestamp(stamp, dt.timezone.utc).isoformat(timespec="seconds")


def list_runs(results_dir: Path) -> list[Path]:
    """Run folders (those with a ``cases/`` folder), newest first."""
    runs = [p for p in _run_dirs(results_dir) if (p / "cases").is_dir()]
    return sorted(runs, key=lambda p: (run_time(p), p.name), reverse=True)


def resolve_run(name: str | Path, results_dir: Path) -> Path:
    """A run id under ``results_dir`` or a path to a run folder; RunError when neither."""
    text = str(name)
    by_id = results_dir / text
    if "/" not in text and os.sep not in text and by_id.is_dir():
        return by_id
    if Path(text).is_dir():
        return Path(text)
    known = [p.name for p in list_runs(results_dir)][:5]
    hint = f" (newest there: {', '.join(known)})" if known else ""
    raise RunError(f"no run {text!r}: neither a folder nor a run id under {results_dir}{hint}")


def newest_run(results_dir: Path) -> Path:
    runs = list_runs(results_dir)
    if not runs:
        raise RunError(f"no runs under {results_dir}: run the benchmark first (pytest benchmarks)")
    return runs[0]


R = TypeVar("R", bound=Mapping[str, Any])


def newest_by_case(records: Iterable[R], *, finished_only: bool = True) -> dict[CaseKey, R]:
    """The newest of ``records`` for each case (method, model, task, seed)."""
    best: dict[CaseKey, tuple[tuple[str, str], R]] = {}
    for record in records:
        if finished_only and record["status"] != "finished":
            continue
        key, when = case_key(record), newer(record, str(record["run_id"]))
        if key not in best or when >= best[key][0]:
            best[key] = (when, record)
    return {key: record for key, (_, record) in best.items()}


def newest_per_case(runs: Iterable[Run], *, finished_only: bool = True) -> dict[CaseKey, Record]:
    """The newest record of each case (method, model, task, seed) over ``runs``."""
    return newest_by_case((r for run in runs for r in run.records), finished_only=finished_only)


def all_runs(results_dir: Path) -> list[Run]:
    return [load_run(p) for p in _run_dirs(results_dir)]


# --------------------------------------------------------------------------- earlier results


@dataclass(frozen=True)
class Earlier:
    """A finished record of an earlier run."""

    run_dir: Path
    record: Record

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def origin(self) -> str:
        """The run that computed the record (an adopted record names where it came from)."""
        return str(self.record.get("cached_from") or self.run_id)

    @property
    def trained_in(self) -> str:
        """The run that trained the weights the record was scored with."""
        return str(self.record.get("reused_training_from") or self.origin)

    def adapter(self) -> Path | None:
        relative = self.record.get("adapter_dir")
        if not relative:
            return None
        path = (self.run_dir / relative).resolve()
        return path if (path / "adapter_config.json").is_file() else None


@dataclass
class History:
    """Finished records of earlier runs, newest per case hash and per training hash."""

    by_case: dict[str, Earlier] = field(default_factory=dict)
    by_training: dict[str, Earlier] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, results_dir: Path, exclude: Path | None = None) -> History:
        """Every run folder under ``results_dir`` (but ``exclude``), the newest record per hash.

        A training hash is only indexed for a record whose adapter is still on disk (only a saved
        adapter can be re-scored).
        """
        history = cls()
        newest_case: dict[str, tuple[str, str]] = {}
        newest_training: dict[str, tuple[str, str]] = {}
        for run_dir in _run_dirs(results_dir):
            if exclude is not None and run_dir.resolve() == exclude.resolve():
                continue
            run = load_run(run_dir)
            history.problems.extend(f"ignored (will rerun if needed): {p}" for p in run.problems)
            for record in run.records:
                case_hash, training_hash = record.get("case_hash"), record.get("training_hash")
                if record["status"] != "finished" or not isinstance(case_hash, str) or not case_hash:
                    continue
                earlier = Earlier(run_dir, record)
                when = newer(record, run_dir.name)
                if when >= newest_case.get(case_hash, ("", "")):
                    newest_case[case_hash] = when
                    history.by_case[case_hash] = earlier
                if (
                    isinstance(training_hash, str)
                    and training_hash
                    and when >= newest_training.get(training_hash, ("", ""))
                    and earlier.adapter() is not None
                ):
                    newest_training[training_hash] = when
                    history.by_training[training_hash] = earlier
        return history


def adopt(earlier: Earlier, run_dir: Path, run_id: str, case_id: str | None = None) -> Record:
    """Copy an earlier finished record into this run as ``case_id``, pointing at where it came from.

    ``case_id`` is this session's id of the case: the same spec can have another id in the earlier
    run (``--seeds 0,1`` names the seed, a single-seed run does not).
    """
    record = copy.deepcopy(earlier.record)
    record["run_id"] = run_id
    record["cached_from"] = earlier.origin
    if case_id is not None:
        record["case_id"] = case_id
    adapter = earlier.adapter()
    # adapter_dir stays relative to the record's run folder, as in a fresh record.
    record["adapter_dir"] = os.path.relpath(adapter, run_dir.resolve()) if adapter is not None else None
    write_record(run_dir, record)
    return record


def stored_record(run_dir: Path, case_id: str) -> Record | None:
    path = record_path(run_dir, case_id)
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except RecordError:
        return None
