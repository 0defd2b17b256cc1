"""One case, end to end: fresh model -> method -> train -> save adapter -> score -> record.

This is what the benchmark test calls. Everything a case measures goes into its record (see
``peftcore.results``); a case that fails still writes a record saying how and how far it got,
and raises so that pytest reports it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
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
from peftcore.errors import DivergenceError
from peftcore.example import TaskData
from peftcore.measure import PeakMemory, device_info
from peftcore.models import LoadedBase
from peftcore.results import RECORD_FORMAT, write_record

VERSIONED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "datasets", "peftcore")
# Packages whose version can change a case's numbers: part of the case's identity.
HASHED_PACKAGES = ("torch", "transformers", "peft", "bitsandbytes", "peftcore")


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {}
    for name in VERSIONED_PACKAGES:
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
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


def case_hash(case: Case, model_sha256: str, data: TaskData, versions: dict[str, str | None]) -> str:
    """Content hash of everything that determines a case's result."""
    identity = {
        "spec": case.resolved(),
        "model_sha256": model_sha256,
        "data_sha256": data.data_sha256,
        "split_sha256": data.split_sha256,
        "versions": {k: versions.get(k) for k in HASHED_PACKAGES},
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


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


def run_case(case: Case, base: LoadedBase, data: TaskData, ctx: CaseRun) -> dict[str, Any]:
    """Train and score one case and write its record. Raises after writing on failure."""
    from peftcore import methods, prompting, scoring, train
    from peftcore.errors import PeftcoreError

    versions = package_versions()
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "run_id": ctx.run_id,
        "case_id": case.case_id,
        "case_hash": case_hash(case, base.sha256, data, versions),
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
    }
    from peftcore.metrics import resolve_metric

    for name in case.task.metrics:  # an unknown or unreachable metric fails now, not after training
        resolve_metric(name)
    fmt = prompting.PromptFormat.for_model(base.tokenizer, case.model.chat_template)
    budget = case.training
    lm = case.task.type == "language_modeling"
    outcome = None
    memory = PeakMemory(ctx.device)
    try:
        train_set = None
        if case.method.trains:
            train_set = prompting.tokenized_train_set(
                data.train, fmt, budget.max_length, lm=lm, data_key=f"{data.data_sha256}:{data.split_sha256}"
            )
        with memory:
            from transformers import set_seed

            set_seed(budget.seed)
            model = methods.apply_method(base.fresh(), case.method, budget)
            trainable, total = methods.parameter_counts(model)
            training: dict[str, Any] = {
                "trainable_params": trainable,
                "total_params": total,
                "trainable_percent": 100.0 * trainable / total if total else 0.0,
            }
            if case.method.trains:
                with tempfile.TemporaryDirectory(prefix="peftcore-trainer-") as scratch:
                    outcome = train.TrainOutcome()

                    def fit() -> train.TrainOutcome:
                        return train.train(
                            model,
                            base.tokenizer,
                            train_set,
                            budget,
                            case.method,
                            device=ctx.device,
                            output_dir=Path(scratch),
                            case_id=case.case_id,
                        )

                    outcome = ctx.timer(fit)
                adapter_bytes, adapter_dir = save_adapter(
                    model, case, ctx.run_dir, keep_full=ctx.keep_full_models
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
        training.update(
            peak_memory_bytes=memory.peak_bytes,
            peak_reserved_bytes=memory.peak_reserved_bytes,
            memory_method=memory.method,
        )
        record["training"] = training
        precision = train.resolve_precision(budget, ctx.device)
        results = {}
        for split in ("held_out", "seen"):
            results[split] = scoring.score(
                model, fmt, data.split(split), case.task, case.eval, device=ctx.device, precision=precision
            )
            record["metrics"][split] = results[split].metrics
        record["inference"] = results["held_out"].inference
        record["predictions"] = {"held_out": results["held_out"].predictions[:20]}
        record["status"] = "finished"
    except DivergenceError as err:
        record["reason"] = str(err)
        record["training"] = _partial_training(outcome, memory)
        raise
    except (MemoryError, _cuda_oom()) as err:
        record["status"] = "oom"
        record["reason"] = (
            f"out of memory after {memory.read():,} bytes above the case's start ({type(err).__name__}); "
            "try a smaller batch_size or max_length, gradient_checkpointing: true, or a quantized base"
        )
        raise
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        record["reason"] = "interrupted"
        record["training"] = _partial_training(outcome, memory)
        raise
    except PeftcoreError as err:
        record["reason"] = str(err)
        raise
    except Exception as err:
        record["reason"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        raise
    finally:
        record["provenance"]["finished_at"] = _now()
        if ctx.extra_info is not None:
            _fill_extra_info(ctx.extra_info, record)
        with contextlib.suppress(OSError) if record["status"] != "finished" else contextlib.nullcontext():
            write_record(ctx.run_dir, record)
    return record


def _cuda_oom() -> type[BaseException]:
    try:
        import torch

        return torch.OutOfMemoryError
    except (ImportError, AttributeError):
        return MemoryError


def _partial_training(outcome: Any, memory: PeakMemory) -> dict[str, Any]:
    info: dict[str, Any] = {"peak_memory_bytes": memory.read(), "memory_method": memory.method}
    if outcome is not None:
        info["loss_curve"] = [[s, v] for s, v in outcome.loss_curve]
        info["steps"] = outcome.steps
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
