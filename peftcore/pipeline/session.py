"""A benchmark session: which cases need running, which results can be reused, which gates break.

A case's identity is a content hash of everything that determines its result (the fully
resolved spec, the model and data hashes, and the versions of the packages that change
numbers). Before a case runs, the session looks for a finished record with the same hash in
earlier runs; if there is one, the record is adopted into this run (marked ``cached_from``)
and the case is not run again. A finished record already in this run's own folder (the same
``--run-id`` given again, e.g. after the run was killed) is kept as it is: that resumes the
run. If only evaluation settings changed, the *training* hash still matches an earlier record,
and its saved adapter is re-scored instead of trained again.

Nothing here imports torch or pytest; the plugin turns outcomes into skips and failures.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.data.example import TaskData
from peftcore.results.store import RecordError, iter_record_files, read_record, record_path, write_record
from peftcore.spec.cases import Case
from peftcore.spec.types import ProfileSpec

HASHED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "peftcore")
# Keys of a spec that do not change what is trained (descriptions, licences, scoring).
_NOT_TRAINING = {
    "task": ("description", "license", "metrics", "generation", "expect"),
    "method": ("description",),
    "model": ("description", "license", "params"),
}


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def hashed_versions(versions: Mapping[str, str | None]) -> dict[str, str | None]:
    return {name: versions.get(name) for name in HASHED_PACKAGES}


@dataclass(frozen=True)
class Identity:
    case_hash: str  # everything that determines the record
    training_hash: str  # everything that determines the trained weights


def _hashed_spec(case: Case) -> dict[str, Any]:
    spec = case.resolved()
    # A model's adapter_overrides are already merged into the method's adapter block (see
    # cases._apply_model_overrides); hashed again here, changing one tuner's override would
    # rerun every method on that model.
    spec["model"].pop("adapter_overrides", None)
    return spec


def identify(case: Case, model_sha256: str, data: TaskData, versions: Mapping[str, str | None]) -> Identity:
    versions = hashed_versions(versions)
    case_hash = _digest(
        {
            "spec": _hashed_spec(case),
            "model_sha256": model_sha256,
            "data_sha256": data.data_sha256,
            "split_sha256": data.split_sha256,
            "versions": versions,
        }
    )
    spec = _hashed_spec(case)
    for section, keys in _NOT_TRAINING.items():
        for key in keys:
            spec[section].pop(key, None)
    training_hash = _digest(
        {
            "method": spec["method"],
            "model": spec["model"],
            "task": spec["task"],
            "training": spec["training"],
            "train_uids": [ex.uid for ex in data.train],
            "model_sha256": model_sha256,
            "versions": versions,
        }
    )
    return Identity(case_hash, training_hash)


@dataclass(frozen=True)
class Earlier:
    """A finished record of an earlier run."""

    run_dir: Path
    record: dict[str, Any]

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
    """Finished records of earlier runs, by case hash and by training hash."""

    by_case: dict[str, Earlier] = field(default_factory=dict)
    by_training: dict[str, Earlier] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def scan(cls, results_dir: Path, exclude: Path | None = None) -> History:
        """Every run folder under ``results_dir`` (but ``exclude``), newest record per hash.

        "Newest" is the record's ``finished_at`` (run ids are free text, so their order says
        nothing), then the run folder's name. Unreadable, older-format and unfinished records
        are never used; the unreadable and older-format ones are listed in ``problems``.
        Dot-prefixed folders and files are temp files of writes in progress and are not read.
        """
        history = cls()
        if not results_dir.is_dir():
            return history
        runs = sorted(
            (p for p in results_dir.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.name,
        )
        newest_case: dict[str, tuple[str, str]] = {}
        newest_training: dict[str, tuple[str, str]] = {}
        for run_dir in runs:
            if exclude is not None and run_dir.resolve() == exclude.resolve():
                continue
            for path in iter_record_files(run_dir):
                try:
                    record = read_record(path)
                except RecordError as err:
                    history.problems.append(f"ignored (will rerun if needed): {err}")
                    continue
                case_hash, training_hash = record.get("case_hash"), record.get("training_hash")
                if record["status"] != "finished" or not isinstance(case_hash, str) or not case_hash:
                    continue
                earlier = Earlier(run_dir, record)
                when = (_finished_at(record), run_dir.name)
                if when >= newest_case.get(case_hash, ("", "")):
                    newest_case[case_hash] = when
                    history.by_case[case_hash] = earlier
                if (
                    isinstance(training_hash, str)
                    and training_hash
                    and when >= newest_training.get(training_hash, ("", ""))
                    and earlier.adapter() is not None  # only a saved adapter can be re-scored
                ):
                    newest_training[training_hash] = when
                    history.by_training[training_hash] = earlier
        return history


def _finished_at(record: Mapping[str, Any]) -> str:
    provenance = record.get("provenance")
    value = provenance.get("finished_at") if isinstance(provenance, Mapping) else None
    return value if isinstance(value, str) else ""  # ISO 8601 in UTC: sorts as text


def adopt(earlier: Earlier, run_dir: Path, run_id: str, case_id: str | None = None) -> dict[str, Any]:
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


def stored_record(run_dir: Path, case_id: str) -> dict[str, Any] | None:
    path = record_path(run_dir, case_id)
    if not path.is_file():
        return None
    try:
        return read_record(path)
    except RecordError:
        return None


@dataclass
class RerunPolicy:
    """``--rerun`` alone reruns everything; ``--rerun=EXPR`` reruns cases matching a -k expression."""

    everything: bool = False
    expression: str | None = None
    matcher: Callable[[Case], bool] | None = None

    def forces(self, case: Case) -> bool:
        if self.everything:
            return True
        return bool(self.matcher and self.matcher(case))


def keyword_matcher(expression: str) -> Callable[[Case], bool]:
    """A ``-k``-style expression over a case's id and spec names (as pytest's -k matches them)."""
    from _pytest.mark.expression import Expression  # pytest's own -k grammar

    compiled = Expression.compile(expression)

    def matches(case: Case) -> bool:
        names = {case.case_id, case.method.name, case.model.name, case.task.name}

        def match(word: str, /, **_: str | int | bool | None) -> bool:
            word = word.lower()
            return any(word in name.lower() for name in names)

        return bool(compiled.evaluate(match))

    return matches


class CachedResult(Exception):
    """The case has a finished record from an earlier run; it was adopted, not run."""

    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record
        super().__init__(f"cached result from {record.get('cached_from') or record['run_id']}")


@dataclass
class BenchmarkSession:
    """The cases of one pytest session: run, adopted from earlier runs, or failed."""

    run_dir: Path
    results_dir: Path
    profile: ProfileSpec | None = None  # its expect:/compare: gates apply to every case
    rerun: RerunPolicy = field(default_factory=RerunPolicy)
    reuse_adapters: bool = True
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    _history: History | None = None

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def history(self) -> History:
        """Finished records of every run, this run's folder included: rerunning the command of an
        interrupted run with the same ``--run-id`` resumes it. Scanned once, at the first case,
        before this session has written anything."""
        if self._history is None:
            self._history = History.scan(self.results_dir)
        return self._history

    def plan(self, case: Case, data: TaskData) -> tuple[Identity, Earlier | None]:
        """The case's identity, and an earlier training to re-score when only scoring changed.

        Raises CachedResult (after adopting the record into this run) when the very same case
        has finished before and no rerun is forced.
        """
        from peftcore.models.load import model_sha256
        from peftcore.pipeline.execute import package_versions

        identity = identify(case, model_sha256(case.model), data, package_versions())
        if self.rerun.forces(case):
            return identity, None
        earlier = self.history.by_case.get(identity.case_hash)
        if earlier is not None:
            here = earlier.run_dir.resolve() == self.run_dir.resolve()
            if here and earlier.record["case_id"] == case.case_id:
                record = earlier.record  # already in this run's folder: kept as it is
            else:
                record = adopt(earlier, self.run_dir, self.run_id, case.case_id)
            self.records[case.case_id] = record
            raise CachedResult(record)
        trained = self.history.by_training.get(identity.training_hash)
        if (
            trained is not None
            and self.reuse_adapters
            and case.method.is_peft
            and trained.adapter() is not None
        ):
            return identity, trained
        return identity, None

    def finished(self, case: Case) -> dict[str, Any] | None:
        """Note the record a case wrote (finished or not) and return it."""
        record = stored_record(self.run_dir, case.case_id)
        if record is not None:
            self.records[case.case_id] = record
        return record

    def gate_failures(self, case: Case, record: Mapping[str, Any]) -> list[str]:
        """Broken gates this case takes part in: its task's and profile's bounds, and the
        profile's rules between this case and any other case of the session."""
        import peftcore.gates.checks as gates

        failures = gates.check_expect(record, case.task.expect, case.task.file)
        if self.profile is not None:
            failures += gates.check_expect(record, self.profile.expect, self.profile.file)
            between = gates.check_relative(
                list(self.records.values()), self.profile.compare, self.profile.file
            )
            failures += gates.failures_for(between, str(record["case_id"]))
        return [str(failure) for failure in failures]
