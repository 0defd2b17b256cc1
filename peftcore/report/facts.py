"""What a reader needs besides the tables: the run's facts, its failed cases, its unreadable files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from peftcore.report.formats import DASH
from peftcore.results.record import case_seed
from peftcore.results.store import Run


def _distinct(values: Iterable[Any]) -> str:
    seen: dict[str, None] = {}
    for value in values:
        if value is not None and value != "":
            seen.setdefault(str(value))
    return " / ".join(seen) if seen else DASH


def run_facts(run: Run) -> list[tuple[str, str]]:
    """(name, value) pairs a reader needs to trust the numbers: profile, budget, data sizes,
    versions, commit. A fact on which records differ lists every value (``a / b``)."""
    records = run.records
    spec = [r.get("spec") or {} for r in records]
    prov = [r.get("provenance") or {} for r in records]
    finished = sum(r["status"] == "finished" for r in records)
    budget = [s.get("training") or {} for s in spec]
    data = [s.get("data") or {} for s in spec]
    versions: dict[str, str] = {}
    for p in prov:
        for name, version in (p.get("versions") or {}).items():
            versions.setdefault(str(name), str(version))
    commit = _distinct(
        f"{str(p.get('git_commit'))[:10]}{' (dirty)' if p.get('git_dirty') else ''}"
        for p in prov
        if p.get("git_commit")
    )
    times = sorted(str(t) for p in prov for t in (p.get("started_at"), p.get("finished_at")) if t)
    return [
        ("Run", run.run_id),
        ("Profile", _distinct(r.get("profile") for r in records)),
        ("Cases", f"{len(records)} ({finished} finished, {len(records) - finished} not)"),
        ("Models", _distinct(r["model"] for r in records)),
        ("Device", _distinct(p.get("device") for p in prov)),
        (
            "Training budget",
            f"{_distinct(b.get('max_steps') for b in budget)} steps"
            f" × batch {_distinct(b.get('batch_size') for b in budget)}"
            f", max length {_distinct(b.get('max_length') for b in budget)}"
            f", learning rate {_distinct(b.get('learning_rate') for b in budget)}",
        ),
        (
            "Examples",
            f"train {_distinct(d.get('train') for d in data)}"
            f", held-out {_distinct(d.get('held_out') for d in data)}"
            f", seen {_distinct(d.get('seen') for d in data)} (seen: a sample of train)",
        ),
        ("Seeds", _distinct(sorted({case_seed(r) for r in records}))),
        ("Versions", ", ".join(f"{k} {v}" for k, v in versions.items()) or DASH),
        ("Git commit", commit),
        ("Time", f"{times[0]} → {times[-1]}" if times else DASH),
    ]


def unreadable(run: Run, reference: Run | None) -> list[str]:
    """Unreadable record files of the reported run and of the run it is compared with."""
    return [*run.problems, *(reference.problems if reference is not None else ())]


def failed_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records that did not finish, by case id."""
    return sorted((r for r in records if r["status"] != "finished"), key=lambda r: str(r["case_id"]))


def reason_line(record: Mapping[str, Any], limit: int = 240) -> str:
    """The first line of why a case did not finish, cut to ``limit`` characters."""
    text = str(record.get("reason") or "no reason recorded").strip()
    first = text.splitlines()[0] if text else text
    return first if len(first) <= limit else first[: limit - 1] + "…"
