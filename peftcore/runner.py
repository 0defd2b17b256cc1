"""One case, end to end: fresh model -> method -> train -> save adapter -> score -> record.

This is what the benchmark test calls. Everything a case measures goes into its record (see
``peftcore.results``); a case that fails still writes a record saying how and how far it got,
and raises so that pytest reports it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.cases import Case
from peftcore.errors import DivergenceError, PeftcoreError
from peftcore.example import TaskData
from peftcore.measure import PeakMemory, device_info, release_freed_memory
from peftcore.models import LoadedBase
from peftcore.results import RECORD_FORMAT, write_record
from peftcore.session import Earlier, Identity, identify

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "peftcore")


# The modules whose code determines a case's numbers: their source is part of peftcore's
# version in a record, so changing how peftcore trains or scores reruns cached cases.
NUMERIC_MODULES = ("data", "example", "methods", "metrics", "models", "prompting", "runner", "scoring", "train")


@functools.cache
def code_fingerprint() -> str:
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for name in NUMERIC_MODULES:
        path = package / f"{name}.py"
        digest.update(name.encode())
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:12]


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    versions["peftcore"] = f"{versions.get('peftcore') or '0'}+{code_fingerprint()}"
    return versions


def git_state(where: Path) -> dict[str, Any]:
    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _dir_bytes(folder: Path, suffix: str = ".safetensors") -> int:
    return sum(p.stat().st_size for p in folder.rglob(f"*{suffix}") if p.is_file())


def save_adapter(model: Any, case: Case, run_dir: Path, *, keep_full: bool) -> tuple[int, str | None]:
    """Save the trained weights; return (bytes of the safetensors files, folder or None).

    A peft adapter is saved (atomically: temp folder, then rename) to
    ``adapters/<case-id>/``, loadable with ``PeftModel.from_pretrained``. A fully fine-tuned
    model is written too, for its size, and kept only when ``keep_full`` is set (it is as
    large as the model).
    """
    target = run_dir / "adapters" / case.case_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{case.case_id}-", dir=target.parent))
    try:
        from peftcore.methods import save_trained

        save_trained(model, tmp, case.method)
        size = _dir_bytes(tmp)
        if case.method.is_peft or keep_full:
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
            return size, str(target.relative_to(run_dir))
        return size, None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class CaseRun:
    """What a case needs from outside: where to write, on what device, how to time training."""

    run_dir: Path
    run_id: str
    device: str
    repo_root: Path
    # Runs the training function once and returns its result (pytest-benchmark's pedantic).
    timer: Callable[[Callable[[], Any]], Any] = field(default=lambda fn: fn())
    keep_full_models: bool = False
    extra_info: dict[str, Any] | None = None  # benchmark.extra_info, filled in place
    identity: Identity | None = None  # computed by the session; computed here when absent
    reuse: Earlier | None = None  # an earlier record whose adapter is re-scored instead of trained


def run_case(case: Case, base: LoadedBase, data: TaskData, ctx: CaseRun) -> dict[str, Any]:
    """Train and score one case and write its record. Raises after writing on failure.

    A failure is classified in the record: ``failed`` (divergence, an exception), ``oom`` (with
    the peak reached and what would help) or ``cancelled`` (Ctrl-C / SIGTERM, with how far it
    got). The model is dropped before the error leaves, so its memory is released even though
    pytest keeps the traceback.
    """
    from peftcore.metrics import resolve_metric

    for name in case.task.metrics:  # an unknown or unreachable metric fails now, not after training
        resolve_metric(name)
    versions = package_versions()
    identity = ctx.identity or identify(case, base.sha256, data, versions)
    record = _new_record(case, base, data, ctx, identity, versions)
    state = _CaseState(memory=PeakMemory(ctx.device))
    try:
        _train_and_score(case, base, data, ctx, record, state)
        record["status"] = "finished"
    except DivergenceError as err:
        record["reason"] = str(err)
        record["training"] = _partial_training(state)
        raise
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        record["reason"] = f"interrupted during {state.stage}"
        record["training"] = _partial_training(state)
        raise
    except Exception as err:
        if _is_out_of_memory(err):
            state.model = None
            record["status"] = "oom"
            record["training"] = _partial_training(state)
            record["reason"] = (
                f"out of memory during {state.stage}, {state.memory.read():,} bytes above the case's start "
                f"({type(err).__name__}); try a smaller batch_size or max_length, "
                "gradient_checkpointing: true, or a quantized base"
            )
            raise CaseOutOfMemory(record["reason"]) from None  # the traceback would pin the tensors
        record["reason"] = _one_line(err)
        raise
    finally:
        state.model = None
        release_freed_memory()
        record["provenance"]["finished_at"] = _now()
        if ctx.extra_info is not None:
            _fill_extra_info(ctx.extra_info, record)
        with contextlib.suppress(OSError) if record["status"] != "finished" else contextlib.nullcontext():
            write_record(ctx.run_dir, record)
    return record


class CaseOutOfMemory(PeftcoreError):
    """A case ran out of memory; the message says how far it got and what would help."""


@dataclass
class _CaseState:
    """How far a case got, for the record of a case that does not finish."""

    memory: PeakMemory
    stage: str = "setup"
    model: Any = None
    outcome: Any = None


def _new_record(
    case: Case, base: LoadedBase, data: TaskData, ctx: CaseRun, identity: Identity, versions: dict[str, Any]
) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "run_id": ctx.run_id,
        "case_id": case.case_id,
        "case_hash": identity.case_hash,
        "training_hash": identity.training_hash,
        "profile": case.profile,
        "method": case.method.name,
        "model": case.model.name,
        "task": case.task.name,
        "seed": case.training.seed,
        "status": "failed",
        "reason": None,
        "spec": case.resolved(),
        "base_model": base.describe(),
        "training": None,
        "metrics": {},
        "inference": None,
        "provenance": {
            "versions": versions,
            "device": device_info(ctx.device),
            "model_sha256": base.sha256,
            "data_sha256": data.data_sha256,
            "split_sha256": data.split_sha256,
            "split_sizes": {"train": len(data.train), "held_out": len(data.held_out), "seen": len(data.seen)},
            **git_state(ctx.repo_root),
            "host": platform.node(),
            "started_at": _now(),
            "finished_at": None,
        },
        "adapter_dir": None,
        "reused_training_from": None,
    }


def _train_and_score(
    case: Case, base: LoadedBase, data: TaskData, ctx: CaseRun, record: dict[str, Any], state: _CaseState
) -> None:
    from peftcore import methods, prompting, scoring, train

    fmt = prompting.PromptFormat.for_model(base.tokenizer, case.model.chat_template)
    budget = case.training
    train_set = None
    if case.method.trains and ctx.reuse is None:
        state.stage = "tokenization"
        train_set = prompting.tokenized_train_set(
            data.train,
            fmt,
            budget.max_length,
            lm=case.task.type == "language_modeling",
            data_key=f"{data.data_sha256}:{data.split_sha256}",
        )
    with state.memory:
        from transformers import set_seed

        state.stage = "model preparation"
        set_seed(budget.seed)
        if ctx.reuse is not None:
            state.model = methods.load_trained(base.fresh(), ctx.reuse.adapter(), case.method)
            record["reused_training_from"] = ctx.reuse.run_id
        else:
            state.model = methods.apply_method(base.fresh(), case.method, budget)
        trainable, total = methods.parameter_counts(state.model)
        training: dict[str, Any] = {
            "trainable_params": trainable,
            "total_params": total,
            "trainable_percent": 100.0 * trainable / total if total else 0.0,
        }
        if ctx.reuse is not None:
            earlier = ctx.reuse.record.get("training") or {}
            training = {**earlier, **training}
            record["adapter_dir"] = os.path.relpath(ctx.reuse.adapter() or "", ctx.run_dir.resolve())
        elif case.method.trains:
            state.stage = "training"
            with tempfile.TemporaryDirectory(prefix="peftcore-trainer-") as scratch:
                state.outcome = train.TrainOutcome()

                def fit() -> train.TrainOutcome:
                    return train.train(
                        state.model,
                        base.tokenizer,
                        train_set,
                        budget,
                        case.method,
                        device=ctx.device,
                        output_dir=Path(scratch),
                        case_id=case.case_id,
                        outcome=state.outcome,
                    )

                outcome = ctx.timer(fit)
            state.stage = "saving the adapter"
            adapter_bytes, adapter_dir = save_adapter(
                state.model, case, ctx.run_dir, keep_full=ctx.keep_full_models
            )
            record["adapter_dir"] = adapter_dir
            training.update(
                steps=outcome.steps,
                train_seconds=round(outcome.train_seconds, 3),
                train_tokens=outcome.train_tokens,
                padded_tokens=outcome.padded_tokens,
                padding_fraction=round(outcome.padding_fraction, 4),
                tokens_per_second=round(outcome.tokens_per_second, 2),
                precision=outcome.precision,
                final_loss=outcome.final_loss,
                loss_curve=[[s, v] for s, v in outcome.loss_curve],
                adapter_bytes=adapter_bytes,
                **outcome.extra,
            )
    if ctx.reuse is None:
        training.update(
            peak_memory_bytes=state.memory.peak_bytes,
            peak_reserved_bytes=state.memory.peak_reserved_bytes,
            memory_method=state.memory.method,
        )
    record["training"] = training
    state.stage = "scoring"
    precision = train.resolve_precision(budget, ctx.device)
    results = {}
    for split in ("held_out", "seen"):
        results[split] = scoring.score(
            state.model, fmt, data.split(split), case.task, case.eval, device=ctx.device, precision=precision
        )
        record["metrics"][split] = results[split].metrics
    record["inference"] = results["held_out"].inference
    record["predictions"] = {"held_out": results["held_out"].predictions[:20]}


def _is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return True
    except (ImportError, AttributeError):
        pass
    # The CPU allocator raises a plain RuntimeError when an allocation fails.
    text = str(err)
    return isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text)


def _one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def _partial_training(state: _CaseState) -> dict[str, Any]:
    info: dict[str, Any] = {"peak_memory_bytes": state.memory.read(), "memory_method": state.memory.method}
    if state.outcome is not None:
        info["loss_curve"] = [[s, v] for s, v in state.outcome.loss_curve]
        info["steps"] = len(state.outcome.loss_curve)
    return info


def _fill_extra_info(extra: dict[str, Any], record: dict[str, Any]) -> None:
    """pytest-benchmark's extra_info (filled in place): the figures, and the whole record."""
    training = record.get("training") or {}
    for key in (
        "train_seconds",
        "tokens_per_second",
        "peak_memory_bytes",
        "trainable_params",
        "adapter_bytes",
    ):
        if key in training:
            extra[key] = training[key]
    for split, values in (record.get("metrics") or {}).items():
        for name, value in values.items():
            extra[f"{split}.{name}"] = value
    extra["peftcore_record"] = record
