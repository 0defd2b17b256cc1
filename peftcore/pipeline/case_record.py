"""A case's record as :func:`peftcore.pipeline.execute.run_case` assembles it: blank before the
case starts, the training figures each mode adds (parameter counts, the memory window's peak, a
multi-process case's ranks), and what a case that does not finish keeps (:class:`CaseState`: how
far it got; an out-of-memory's reason and whether the session can go on).

Nothing here changes a weight: every figure is read off the model, the memory window or the
training's outcome.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from peftcore.data.example import TaskData
from peftcore.device import device_info
from peftcore.measure import PeakMemory
from peftcore.models.load import LoadedBase
from peftcore.pipeline.failures import CaseOutOfMemory, cpu_kernels_broken
from peftcore.pipeline.identity import Identity
from peftcore.results.provenance import git_state, now, package_versions
from peftcore.spec.cases import Case
from peftcore.vocab.record import RECORD_FORMAT, Record, TrainingFigures

if TYPE_CHECKING:
    from peftcore.train.launch import Launched
    from peftcore.train.outcome import TrainOutcome


@dataclass
class CaseState:
    """How far a case got, for the record of a case that does not finish."""

    memory: PeakMemory
    stage: str = "setup"
    model: Any = None
    outcome: TrainOutcome | None = None  # filled as training goes
    looks: Any = None  # a pruned search's trial's looks at its loss (peftcore.pipeline.pruning.Looks)
    trackers: Any = None  # the case's open tracker runs (training.report_to), until closed


def blank_record(case: Case, run_id: str, repo_root: Path, provenance: dict[str, Any]) -> Record:
    """A case's record before anything is known of how it went: its identity and resolved spec,
    status ``failed`` until the case says otherwise, no figures; ``provenance`` adds to the
    versions, git state and host."""
    return {
        "format": RECORD_FORMAT,
        "run_id": run_id,
        "case_id": case.case_id,
        "profile": case.profile,
        "method": case.method.name,
        "model": case.model.name,
        "task": case.task.name,
        "seed": case.training.seed,
        "status": "failed",
        "reason": None,
        "spec": case.resolved(),
        "training": None,
        "metrics": {},
        "inference": None,
        "provenance": {
            "versions": package_versions(),
            **provenance,  # type: ignore[typeddict-item]
            **git_state(repo_root),
            "host": platform.node(),
            "started_at": now(),
            "finished_at": None,
        },
        "adapter_dir": None,
        "reused_training_from": None,
    }


def new_record(
    case: Case,
    base: LoadedBase,
    data: TaskData,
    *,
    run_id: str,
    repo_root: Path,
    device: str,
    identity: Identity,
) -> Record:
    """A case's blank record with what is known before it runs: the device, the model's and the
    data's hashes, the split sizes and the case's identity."""
    record = blank_record(
        case,
        run_id,
        repo_root,
        {
            "device": device_info(device),
            "model_sha256": base.sha256,
            "data_sha256": data.data_sha256,
            "split_sha256": data.split_sha256,
            "split_sizes": {
                "train": len(data.train),
                "held_out": len(data.held_out),
                "seen": len(data.seen),
                **({"tune": len(data.tune)} if data.tune else {}),
            },
        },
    )
    record["case_hash"] = identity.case_hash
    record["training_hash"] = identity.training_hash
    record["base_model"] = cast(Any, base.describe())
    return record


def parameter_counts(trainable: int, total: int) -> TrainingFigures:
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
    }


def memory_figures(memory: PeakMemory) -> TrainingFigures:
    """The case's peak memory, once its window has closed."""
    return {
        "peak_memory_bytes": memory.peak_bytes,
        "peak_reserved_bytes": memory.peak_reserved_bytes,
        "memory_method": memory.method,
    }


def across_processes_figures(launched: Launched) -> TrainingFigures:
    """The figures only a multi-process case has; its peak memory is the largest rank's."""
    peaks = launched.peak_memory_bytes_per_rank
    reserved = [r for r in launched.peak_reserved_bytes_per_rank if r is not None]
    return {
        "processes": launched.processes,
        "peak_memory_bytes": max(peaks),
        "peak_memory_bytes_per_rank": peaks,
        "peak_reserved_bytes": max(reserved) if reserved else None,
        "memory_method": launched.memory_method,
        "launch_seconds": round(launched.launch_seconds, 3),
    }


def partial_training(state: CaseState) -> TrainingFigures:
    info: TrainingFigures = {"peak_memory_bytes": state.memory.read(), "memory_method": state.memory.method}
    if state.outcome is not None:
        info.update(state.outcome.partial_figures())
    return info


def record_out_of_memory(
    case: Case, device: str, record: Record, state: CaseState, broken: str | None
) -> CaseOutOfMemory:
    """Complete the record of a case that ran out of memory (its memory released by now)."""
    if broken is None and device == "cpu":
        broken = cpu_kernels_broken()  # probed only now: with memory short it could break it
    record["training"] = partial_training(state)
    reason = (
        f"out of memory during {state.stage}, {state.memory.read():,} bytes above the case's start "
        f"({record['reason']}); try a smaller batch_size or max_length, "
        "gradient_checkpointing: true, or a quantized base"
    )
    stop = None
    if broken is not None:
        stop = (
            f"{case.case_id} ran out of memory inside oneDNN, and this process can no longer build "
            f"CPU kernels ({broken}): oneDNN keeps the failed allocation as an error of the thread. "
            "The session stops here; run the same command again to run the remaining cases "
            "(finished ones are kept)"
        )
        reason += f"; {stop}"
    record["reason"] = reason
    return CaseOutOfMemory(reason, stops_session=stop)
