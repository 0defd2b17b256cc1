"""One rank of a case trained data-parallel under torchrun (started by peftcore.train.launch).

``python -m peftcore.train.distributed <scratch>`` in each process torchrun starts: join the
process group (gloo on a CPU, NCCL on a GPU of its own, with the budget's stall timeout), load
the base from the model spec, apply the method with the case's seed, and train with the same
:func:`peftcore.train.trainer.train` as a single process (the Trainer wraps the model in DDP,
or with ``training.parallelism: fsdp`` shards it with FSDP2, and gives each rank its part of
every global batch). Then every rank's counts and peak memory are gathered to rank 0, which saves
the trained weights (under FSDP, the full state dict every rank helped gather) and writes the
outcome.

A rank that raises writes its error (type, message, where, when) before it exits, so the launcher
can tell the first failure from the ranks that failed because of it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.errors import DivergenceError
from peftcore.storage import atomic_write_json
from peftcore.train.launch import Scratch

if TYPE_CHECKING:
    from peftcore.spec import MethodSpec
    from peftcore.train.outcome import TrainOutcome


def main(argv: Sequence[str] | None = None) -> None:
    """Train this rank's share; rank 0 saves and writes the outcome. Re-raises any error after
    writing it to the scratch folder (torchrun then stops the other ranks)."""
    args = list(sys.argv[1:] if argv is None else argv)
    files = Scratch(Path(args[0]))
    rank = int(os.environ["RANK"])
    _die_with_torchrun()
    atomic_write_json(files.pid(rank), os.getpid())
    progress = Progress(files, rank)
    try:
        _train_rank(files, rank, int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"]), progress)
    except Exception as err:
        atomic_write_json(files.error(rank), _error(err, rank, progress))
        raise


def _die_with_torchrun() -> None:
    """SIGTERM this rank when torchrun dies (Linux), so no rank outlives a killed launch."""
    import signal

    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _error(err: BaseException, rank: int, progress: Progress) -> dict[str, Any]:
    lines = str(err).strip().splitlines()
    frames = traceback.extract_tb(err.__traceback__)
    error: dict[str, Any] = {
        "rank": rank,
        "time": time.time(),
        "type": type(err).__name__,
        "message": lines[0] if lines else "",
        "where": f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else None,
        "traceback": traceback.format_exception(err)[-40:],
        "stage": progress.stage,
    }
    if isinstance(err, DivergenceError):
        error.update(step=err.step, loss=err.loss)
    return error


class Progress:
    """Rank 0's heartbeat: the stage it is in and, in training, the step and loss curve so far,
    rewritten after every optimizer step and logged loss (and touched after every micro-batch)."""

    def __init__(self, files: Scratch, rank: int) -> None:
        self.files, self.rank = files, rank
        self.stage = "starting"
        self.outcome: Any = None

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.write()

    def write(self, step: int = 0) -> None:
        if self.rank != 0:
            return
        curve = [list(point) for point in self.outcome.loss_curve] if self.outcome is not None else []
        atomic_write_json(self.files.progress, {"stage": self.stage, "step": step, "loss_curve": curve})

    def callback(self) -> Any:
        from transformers import TrainerCallback

        progress = self

        class Heartbeat(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                progress.write(int(state.global_step))

            def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                progress.write(int(state.global_step))  # the loss is logged after on_step_end

            def on_substep_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if progress.rank == 0:
                    with contextlib.suppress(OSError):
                        os.utime(progress.files.progress)

        return Heartbeat()


def _train_rank(files: Scratch, rank: int, world: int, local_rank: int, progress: Progress) -> None:
    import datasets
    import torch
    import torch.distributed as dist
    from transformers import set_seed

    from peftcore.device import resolve_precision
    from peftcore.measure import PeakMemory
    from peftcore.models.load import load_base
    from peftcore.spec.schema import build
    from peftcore.spec.types import MethodSpec, ModelSpec, TrainingBudget
    from peftcore.train import methods
    from peftcore.train.flops import training_peaks
    from peftcore.train.outcome import TrainOutcome
    from peftcore.train.trainer import train

    job = json.loads(files.job.read_text())
    spec = job["spec"]
    model_file = job["model_file"]
    method_file = job["method_file"]
    model_spec = build(ModelSpec, spec["model"], model_file, "model")
    model_spec = dataclasses.replace(model_spec, file=Path(model_file) if model_file else None)
    method = build(MethodSpec, spec["method"], method_file, "method")
    method = dataclasses.replace(method, file=Path(method_file) if method_file else None)
    budget = build(TrainingBudget, spec["training"], method_file, "training")
    device = "cpu" if job["device"] == "cpu" else f"cuda:{local_rank}"
    if device != "cpu":
        torch.cuda.set_device(device)
    # The Trainer (accelerate) uses a process group that is already there; made here, it carries
    # the stall timeout, and the ranks can meet before training.
    dist.init_process_group(
        "gloo" if device == "cpu" else "nccl", timeout=timedelta(seconds=budget.stall_timeout_seconds)
    )
    try:
        progress.enter("measuring the matmul peak")
        dist.barrier()  # every rank at once: on a shared CPU each measures its share of it
        peak_flops = training_peaks(device, resolve_precision(budget.precision, device))
        with PeakMemory(device) as memory:
            progress.enter("loading the base model")
            base = load_base(model_spec, method.base, device)
            set_seed(budget.seed)  # as in one process: the same seed right before the method
            model = methods.apply_method(base.model, method, budget)
            trainable, total = methods.parameter_counts(model)
            dataset = datasets.load_from_disk(str(files.train_set))
            progress.outcome = outcome = TrainOutcome()
            # FSDP: the model's own state_dict() is this rank's shards; the gathered whole comes here.
            full_state: dict[str, Any] | None = {} if budget.parallelism == "fsdp" else None
            progress.enter("training")
            with tempfile.TemporaryDirectory(prefix=f"peftcore-rank{rank}-") as scratch:
                train(
                    model,
                    base.tokenizer,
                    dataset,
                    budget,
                    method,
                    device=device,
                    output_dir=Path(scratch),
                    case_id=job["case_id"],
                    outcome=outcome,
                    extra_callbacks=[progress.callback()],
                    full_state_dict=full_state,
                )
        mine = {
            "rank": rank,
            "peak_memory_bytes": memory.peak_bytes,
            "peak_reserved_bytes": memory.peak_reserved_bytes,
            "memory_method": memory.method,
            "peak_flops_per_second": peak_flops,
            "parameters_held": _parameters_held(model),
            "outcome": outcome.to_dict(),
        }
        ranks: list[Any] = [None] * world
        progress.enter("gathering the ranks' figures")
        dist.all_gather_object(ranks, mine)
        if rank == 0:
            progress.enter("saving the trained weights")
            methods.save_trained(model, files.trained, method, full_state)
            total_outcome = outcome.over_ranks([TrainOutcome.from_dict(r["outcome"]) for r in ranks])
            if budget.parallelism == "fsdp":
                total_outcome.extra["parameters_held_per_rank"] = [r["parameters_held"] for r in ranks]
            _utilization(model, method, total_outcome, ranks)
            atomic_write_json(
                files.outcome,
                {
                    "outcome": total_outcome.to_dict(),
                    "trainable_params": trainable,
                    "total_params": total,
                    "ranks": ranks,
                },
            )
    finally:
        dist.destroy_process_group()


def _parameters_held(model: Any) -> int:
    """The parameters this rank holds: all of them under DDP, its shards under FSDP (whose
    parameters are DTensors, each rank's ``to_local()`` part of the whole)."""
    return sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in model.parameters())


def _utilization(model: Any, method: MethodSpec, outcome: TrainOutcome, ranks: list[dict[str, Any]]) -> None:
    """MFU over every rank: the run's FLOPs against the sum of the peaks the ranks measured at
    the same moment (on a shared CPU, each its share)."""
    from peftcore.train.trainer import utilization

    peaks = [r["peak_flops_per_second"] for r in ranks]  # per precision, each rank's
    peak = {name: sum(p[name] for p in peaks) for name in peaks[0]}
    if peak:
        utilization(model, method, outcome, peak)


if __name__ == "__main__":
    main()
