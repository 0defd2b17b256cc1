"""What a reader needs besides the tables: the run's facts, its failed cases, its unreadable files."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from peftcore.report.formats import DASH
from peftcore.results.store import Run
from peftcore.vocab.record import case_seed


def _distinct(values: Iterable[Any]) -> str:
    seen: dict[str, None] = {}
    for value in values:
        if value is not None and value != "":
            seen.setdefault(str(value))
    return " / ".join(seen) if seen else DASH


def _device(info: Any) -> str | None:
    """``cpu (AMD EPYC, avx2, 2 cores, 2 torch threads)`` from a record's device block (records
    written before the CPU's model and instruction set were kept name the architecture)."""
    if not isinstance(info, Mapping):
        return None if info is None else str(info)
    details = [
        str(info.get("cpu_model") or info.get("name") or "") or None,
        str(info["cpu_isa"]) if info.get("cpu_isa") else None,
        f"{info['cpu_count']} cores" if info.get("cpu_count") else None,
        f"{info['torch_threads']} torch threads" if info.get("torch_threads") else None,
        "fast bf16" if info.get("fast_bf16") else None,
    ]
    shown = [d for d in details if d]
    return f"{info.get('device', '?')} ({', '.join(shown)})" if shown else str(info.get("device", "?"))


def _precision(training: Any) -> str | None:
    """A record's training precision with its reason: ``auto: fp32, bf16 is 0.55x fp32, ...``
    (records written before the reason was kept give the precision alone)."""
    if not isinstance(training, Mapping) or not training.get("precision"):
        return None
    return str(training.get("precision_reason") or training["precision"])


def _per_method(records: Iterable[Mapping[str, Any]], value: Any) -> str:
    """A budget value of the records: one value as is; several, each with the methods that have it
    (``0.0002 (lora, qlora) / 1e-05 (full)``)."""
    methods: dict[str, dict[str, None]] = {}
    for record in records:
        got = value(record)
        if got is not None and got != "":
            methods.setdefault(str(got), {}).setdefault(str(record["method"]))
    if len(methods) <= 1:
        return next(iter(methods), DASH)
    return " / ".join(f"{v} ({', '.join(names)})" for v, names in methods.items())


def _learning_rate(record: Mapping[str, Any]) -> Any:
    """The case's learning rate; None for a method that does not train (``base``)."""
    spec = record.get("spec") or {}
    if (spec.get("method") or {}).get("tuner") == "none":
        return None
    return (spec.get("training") or {}).get("learning_rate")


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
        ("Device", _distinct(_device(p.get("device")) for p in prov)),
        ("Training precision", _distinct(_precision(r.get("training")) for r in records)),
        (
            "Training budget",
            f"{_distinct(b.get('max_steps') for b in budget)} steps"
            f" × batch {_distinct(b.get('batch_size') for b in budget)}"
            f", max length {_distinct(b.get('max_length') for b in budget)}"
            ", learning rate " + _per_method(records, _learning_rate),
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


MISSING_LEAD = (
    "{n} case(s) of the grid that the run's sessions (shards) selected have no record: a shard "
    "still running, not started, or stopped. Run the same command (same --run-id, same --shard) to "
    "fill them in."
)


def missing_cases(run: Run) -> list[str]:
    """Lines on what the run's grid manifests expect and no record holds: the shards that never
    started, then the missing case ids (nothing for a run without manifests, or a complete one)."""
    grid = run.grid
    if grid is None:
        return []
    lines = [f"shard {shard} has not started" for shard in grid.shards_not_started]
    lines += [f"{case_id}: no record" for case_id in grid.missing]
    return lines


def failed_records(records: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The records that did not finish, by case id."""
    return sorted((r for r in records if r["status"] != "finished"), key=lambda r: str(r["case_id"]))


def reason_line(record: Mapping[str, Any], limit: int = 240) -> str:
    """The first line of why a case did not finish, cut to ``limit`` characters."""
    text = str(record.get("reason") or "no reason recorded").strip()
    first = text.splitlines()[0] if text else text
    return first if len(first) <= limit else first[: limit - 1] + "…"
