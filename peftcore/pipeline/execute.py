"""One case, end to end: fresh model -> method -> train -> save adapter -> score -> record.

This is what the benchmark test calls. Everything a case measures goes into its record (see
``peftcore.results.store``); a case that fails still writes a record saying how and how far it got,
and raises so that pytest reports it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.data.example import TaskData
from peftcore.errors import DivergenceError, PeftcoreError
from peftcore.measure import PeakMemory, device_info, release_freed_memory
from peftcore.models.load import LoadedBase
from peftcore.pipeline.session import Earlier, Identity, identify
from peftcore.results.store import RECORD_FORMAT, write_record
from peftcore.spec.cases import Case

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "peftcore")


# The modules whose code determines a case's numbers: their source is part of peftcore's
# version in a record, so changing how peftcore trains or scores reruns cached cases.
NUMERIC_MODULES = (
    "data",
    "example",
    "methods",
    "metrics",
    "models",
    "prompting",
    "runner",
    "scoring",
    "train",
)


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
    from peftcore.train.methods import save_trained

    target = run_dir / "adapters" / case.case_id
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{case.case_id}-", dir=target.parent))
        save_trained(model, tmp, case.method)
        size = _dir_bytes(tmp)
        if case.method.is_peft or keep_full:
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
            return size, str(target.relative_to(run_dir))
        return size, None
    except OSError as err:  # a full disk above all: say where, leave nothing half-written
        raise OSError(
            err.errno, f"could not save the trained weights to {target}: {err.strerror or err}"
        ) from err
    finally:
        if tmp is not None and tmp.exists():
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
    pytest keeps the traceback. An out-of-memory after which this process cannot run another
    case (oneDNN, see ``_cpu_kernels_broken``) says why in ``CaseOutOfMemory.stops_session``.
    """
    from peftcore.score.metrics import resolve_metric

    for name in case.task.metrics:  # an unknown or unreachable metric fails now, not after training
        resolve_metric(name)
    versions = package_versions()
    identity = ctx.identity or identify(case, base.sha256, data, versions)
    record = _new_record(case, base, data, ctx, identity, versions)
    state = _CaseState(memory=PeakMemory(ctx.device))
    oom_error: CaseOutOfMemory | None = None
    broken: str | None = None
    try:
        _train_and_score(case, base, data, ctx, record, state)
        record["status"] = "finished"
    except DivergenceError as err:
        record["reason"] = str(err)
        record["training"] = _partial_training(state)
        raise
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        record["training"] = _partial_training(state)
        steps = record["training"].get("steps")
        at_step = f" at step {steps} of {case.training.max_steps}" if state.stage == "training" else ""
        record["reason"] = f"interrupted during {state.stage}{at_step}"
        raise
    except Exception as err:
        out_of_memory = _is_out_of_memory(err)
        if not out_of_memory and ctx.device == "cpu" and _ONEDNN_FAILED in str(err):
            # oneDNN reports a failed allocation of kernel code as a failed primitive; it was
            # one when this thread can no longer build any kernel. (Probing cannot make things
            # worse: either the thread is broken already or the failure was not about memory.)
            broken = _cpu_kernels_broken()
            out_of_memory = broken is not None
        if not out_of_memory:
            record["reason"] = _one_line(err)
            record["training"] = _partial_training(state)
            raise
        record["status"] = "oom"
        record["reason"] = _one_line(err, 160)  # completed below, once the memory is released
    finally:
        state.model = None
        release_freed_memory()
        if record["status"] == "oom":
            oom_error = _out_of_memory(case, ctx, record, state, broken)
        record["provenance"]["finished_at"] = _now()
        if ctx.extra_info is not None:
            _fill_extra_info(ctx.extra_info, record)
        with contextlib.suppress(OSError) if record["status"] != "finished" else contextlib.nullcontext():
            write_record(ctx.run_dir, record)
    if oom_error is not None:
        # Raised here, outside the except block, so that it does not carry the failed
        # allocation's traceback (and through its frames, the model) as its context.
        raise oom_error
    return record


def _out_of_memory(
    case: Case, ctx: CaseRun, record: dict[str, Any], state: _CaseState, broken: str | None
) -> CaseOutOfMemory:
    """Complete the record of a case that ran out of memory (its memory released by now)."""
    if broken is None and ctx.device == "cpu":
        broken = _cpu_kernels_broken()  # probed only now: with memory short it could break it
    record["training"] = _partial_training(state)
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


class CaseOutOfMemory(PeftcoreError):
    """A case ran out of memory; the message says how far it got and what would help.

    ``stops_session`` says why no further case can run in this process (or is None).
    """

    def __init__(self, message: str, stops_session: str | None = None) -> None:
        super().__init__(message)
        self.stops_session = stops_session


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
    import peftcore.train.trainer as train
    from peftcore.score import scoring
    from peftcore.train import methods, prompting

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
            record["reused_training_from"] = ctx.reuse.trained_in
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
    if case.eval.judge is not None and case.task.type == "generation":
        state.stage = "judging"
        _judge(case, data, results, record)
    record["inference"] = results["held_out"].inference
    record["predictions"] = {"held_out": results["held_out"].predictions[:20]}


def _judge(case: Case, data: TaskData, results: dict[str, Any], record: dict[str, Any]) -> None:
    """LLM-as-judge scores of the generated answers, next to the task's metrics (profile
    ``eval.judge``; off by default). The question is the prompt the model answered."""
    from peftcore.score.judge import Judge, JudgeConfig

    assert case.eval.judge is not None
    judge = Judge(JudgeConfig.from_mapping(case.eval.judge))
    for split, result in results.items():
        examples = data.split(split)
        answers = [p["generated"] for p in result.predictions]
        references = [list(e.answers) or e.target for e in examples]
        record["metrics"][split].update(judge.score_many([e.prompt for e in examples], answers, references))


_ONEDNN_FAILED = "could not create a primitive"
_PROBES = itertools.count()


def _is_out_of_memory(err: BaseException) -> bool:
    """True when ``err``, or an error it was raised from or while handling, is a failed allocation.

    peft's and peftcore's own wrappers (a SpecError from ``get_peft_model``) keep the
    allocator's error as their context.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_allocation_failure(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_allocation_failure(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    # The CPU allocator raises a plain RuntimeError when an allocation fails.
    text = str(err)
    if isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        return True
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's
    out_of_memory = getattr(torch, "OutOfMemoryError", None)
    return isinstance(out_of_memory, type) and isinstance(err, out_of_memory)


def _cpu_kernels_broken() -> str | None:
    """None when this thread can still build CPU kernels, else the error that says it cannot.

    oneDNN (torch's bf16 CPU kernels) compiles a kernel for each new shape. When the memory for
    that code cannot be had, the JIT assembler keeps the failure as a thread-local error that is
    never cleared: from then on every kernel not built before fails with "could not create a
    primitive", whatever memory is free. The probe multiplies bf16 matrices of a shape not seen
    before (the primitive cache would answer a known one).
    """
    import torch

    inner = 61 + 2 * next(_PROBES)
    try:
        a = torch.ones(8, inner, dtype=torch.bfloat16)
        b = torch.ones(inner, 40, dtype=torch.bfloat16)
        float((a @ b).sum())
    except RuntimeError as err:
        return _one_line(err)
    return None


def _one_line(err: BaseException, limit: int | None = None) -> str:
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"


def _partial_training(state: _CaseState) -> dict[str, Any]:
    info: dict[str, Any] = {"peak_memory_bytes": state.memory.read(), "memory_method": state.memory.method}
    if state.outcome is not None:
        info["loss_curve"] = [[s, v] for s, v in state.outcome.loss_curve]
        # Optimizer steps taken (train() sets it even when training stops on an error); the
        # last logged step when that bookkeeping did not happen.
        logged = state.outcome.loss_curve[-1][0] if state.outcome.loss_curve else 0
        info["steps"] = max(int(state.outcome.steps), int(logged))
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
