"""One case trained data-parallel over several processes (``training.processes`` > 1): the launch.

The session's process does not train such a case. :func:`train_across_processes` writes the
case's resolved spec and its tokenized training set into a scratch folder and runs

    python -m torch.distributed.run --standalone --nproc_per_node P -m peftcore.train.distributed <scratch>

(with ``--max_restarts=0``, and each rank's output in its own log file under the scratch
folder). ``--standalone`` has torchrun pick a free port on localhost itself. Every rank
(:mod:`peftcore.train.distributed`) loads the base, applies the method and calls the same
:func:`peftcore.train.trainer.train`; the Trainer runs DDP by itself under torchrun. Rank 0 saves
the trained weights and writes the outcome (every rank's counts and peak memory); this process
reads it back (:class:`Launched`) and loads the weights onto its own copy of the base to score.

A rank that raises writes its error before it exits; torchrun then stops the other ranks, and
:class:`RankFailed` carries the first error (by time: the others are its consequences). A rank
waiting in a collective fails after ``training.stall_timeout_seconds`` (the process group's
timeout); the launcher kills torchrun and every rank when rank 0 reports no progress for twice
that (at most that plus a minute; start-up, before rank 0 reports a stage, gets
``STARTUP_GRACE_SECONDS``), so a stuck case ends with a reason, never hangs the session.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.device import resolve_precision
from peftcore.errors import DivergenceError, PeftcoreError
from peftcore.storage import atomic_write_json

if TYPE_CHECKING:
    from peftcore.models.load import LoadedBase
    from peftcore.spec import MethodSpec
    from peftcore.spec.cases import Case
    from peftcore.train.outcome import TrainOutcome

# The module torchrun runs in each process (a test launches one that injects a fault first).
ENTRY_MODULE = "peftcore.train.distributed"
KILL_GRACE_SECONDS = 10.0  # after SIGTERM, before SIGKILL
# Run before torchrun, in its process: asks Linux to SIGTERM it when the session's process dies
# (PR_SET_PDEATHSIG survives exec), so a session killed with SIGKILL leaves no training behind;
# then replaces itself with the command that follows.
_WITH_PARENT = """\
import ctypes, os, signal, sys
try:
    ctypes.CDLL(None).prctl(1, signal.SIGTERM)
except Exception:
    pass
os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
"""


class RankFailed(PeftcoreError):
    """A rank of a multi-process case failed (or the processes stalled); the message names the
    rank and its error in one line."""


@dataclass(frozen=True)
class Scratch:
    """The files the launcher and the ranks exchange, in one scratch folder."""

    root: Path

    @property
    def job(self) -> Path:  # written by the launcher: the resolved spec, device, case id
        return self.root / "job.json"

    @property
    def train_set(self) -> Path:  # the tokenized training set (datasets.save_to_disk)
        return self.root / "train_set"

    @property
    def progress(self) -> Path:  # rank 0: stage, step and loss curve so far; its mtime is the heartbeat
        return self.root / "progress.json"

    @property
    def outcome(self) -> Path:  # rank 0, at the end: the run's figures over every rank
        return self.root / "outcome.json"

    @property
    def trained(self) -> Path:  # rank 0: save_trained's folder
        return self.root / "trained"

    @property
    def logs(self) -> Path:  # torchrun's --log-dir: each rank's stdout and stderr
        return self.root / "logs"

    def error(self, rank: int) -> Path:  # a rank that raised: its error, written before it exits
        return self.root / f"error-{rank}.json"

    def pid(self, rank: int) -> Path:  # each rank's process id, to kill it if torchrun cannot
        return self.root / f"pid-{rank}"


@dataclass
class Launched:
    """What the ranks measured, and where rank 0 saved the trained weights."""

    outcome: TrainOutcome  # every rank's tokens and positions, rank 0's curve, the slowest rank's time
    processes: int
    peak_memory_bytes_per_rank: list[int]  # each rank's peak above its level before loading
    peak_reserved_bytes_per_rank: list[int | None]  # CUDA allocator only
    memory_method: str
    trainable_params: int  # as trained (an adapter loaded for scoring is frozen: it counts 0)
    total_params: int
    launch_seconds: float  # the whole torchrun run: start-up, loading, training, saving
    trained: Path

    def trained_model(self, base: LoadedBase, method: MethodSpec) -> Any:
        """The trained weights on a fresh copy of ``base`` (a peft adapter), or the fully
        fine-tuned model read back, on ``base``'s device."""
        from peftcore.train.methods import load_trained

        if method.is_peft:
            return load_trained(base.fresh(), self.trained, method)
        from transformers import AutoModelForCausalLM

        from peftcore.models.load import detach_from_file, torch_dtype

        model = AutoModelForCausalLM.from_pretrained(
            self.trained,
            dtype=torch_dtype(base.spec.dtype),
            device_map={"": base.device},
            use_safetensors=True,
        )
        detach_from_file(model)  # the scratch folder goes once the model is loaded
        return model.eval()


def train_across_processes(
    case: Case,
    train_set: Any,
    *,
    device: str,
    scratch: Path,
    outcome: TrainOutcome,
    logs_to: Path | None = None,
) -> Launched:
    """Train ``case`` over ``case.training.processes`` processes; return what they measured.

    ``train_set`` is the tokenized training set (``prompting.tokenized_train_set``); ``outcome``
    is given rank 0's loss curve and steps when the launch ends, however it ends, so a case that
    fails or is interrupted keeps them. Raises :class:`RankFailed` naming the first rank that
    failed and its error (an allocation failure is kept as its cause, so the case is classified
    as out of memory), or :class:`DivergenceError` when the ranks stopped at a NaN loss.
    A launch that does not finish leaves its logs in ``logs_to``: torchrun's output, each rank's
    stdout and stderr (``rank-<k>.stderr.log``) and each failed rank's error (``error-<k>.json``).
    """
    budget = case.training
    processes = budget.processes
    if device.startswith("cuda"):
        import torch

        if torch.cuda.device_count() < processes:
            raise PeftcoreError(
                f"training.processes {processes} needs {processes} GPUs, one per process; "
                f"{torch.cuda.device_count()} visible (CUDA_VISIBLE_DEVICES)"
            )
    files = Scratch(scratch)
    files.root.mkdir(parents=True, exist_ok=True)
    spec = case.resolved()
    # The ranks train in the session's choice: measured with their share of the threads, each
    # could choose another.
    spec["training"] = {**spec["training"], "precision": resolve_precision(budget.precision, device)}
    atomic_write_json(
        files.job,
        {
            "case_id": case.case_id,
            "device": device,
            "spec": spec,
            "model_file": str(case.model.file) if case.model.file else None,
            "method_file": str(case.method.file) if case.method.file else None,
        },
    )
    train_set.save_to_disk(str(files.train_set))
    command = [
        sys.executable,
        "-c",
        _WITH_PARENT,  # then execs: python -m torch.distributed.run ...
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        "--max_restarts=0",
        f"--log_dir={files.logs}",
        "--redirects=3",  # each rank's stdout and stderr into its own file under --log_dir
        "-m",
        ENTRY_MODULE,
        str(files.root),
    ]
    start = time.perf_counter()
    code: int | None = None
    with open(files.root / "torchrun.log", "wb") as log:
        proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_rank_environment(processes),
            start_new_session=True,  # its own process group: killed as one on a stall
        )
        try:
            code = _watch(proc, files, budget.stall_timeout_seconds)
        finally:
            if proc.poll() is None:  # a stall, Ctrl-C, or an error here: no process outlives the case
                _kill(proc, files, processes)
            _read_progress(files, outcome)  # rank 0's curve so far, whatever happened
            if (code != 0 or not files.outcome.is_file()) and logs_to is not None:
                _keep_logs(files, logs_to)
    launch_seconds = time.perf_counter() - start
    if code != 0 or not files.outcome.is_file():
        raise _failure(files, processes, code)
    return _launched(files, processes, launch_seconds)


def _keep_logs(files: Scratch, target: Path) -> None:
    """Copy what the ranks and torchrun wrote into ``target`` (atomically; a failure to copy is
    not the case's error, so it is ignored)."""
    import shutil

    from peftcore.storage import atomic_folder

    with contextlib.suppress(OSError), atomic_folder(target) as tmp:
        for path in [files.root / "torchrun.log", *files.root.glob("error-*.json")]:
            if path.is_file():
                shutil.copy2(path, tmp / path.name)
        for path in files.logs.rglob("std*.log"):  # <run>/attempt_0/<local rank>/stderr.log
            shutil.copy2(path, tmp / f"rank-{path.parent.name}.{path.name}")


def _rank_environment(processes: int) -> dict[str, str]:
    """The session's environment, with this peftcore first on the path (the ranks must run the
    same code) and the session's CPU threads shared between the ranks."""
    import torch

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this peftcore package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["OMP_NUM_THREADS"] = str(max(1, torch.get_num_threads() // processes))
    env["PYTHONUNBUFFERED"] = "1"
    return env


# Before rank 0 reports its first stage, torchrun rendezvous and every rank imports torch,
# transformers and peft: tens of seconds on a slow CPU, whatever the training's stall timeout
# (which is about training; a 5 s test timeout killed healthy ranks while they were starting).
STARTUP_GRACE_SECONDS = 300


def _stall_limit(stall_timeout_seconds: int) -> float:
    """Longer than a collective's own timeout, so a rank stuck in one fails with its own error."""
    return stall_timeout_seconds + min(stall_timeout_seconds, 60)


def _watch(proc: subprocess.Popen[bytes], files: Scratch, stall_timeout_seconds: int) -> int:
    """Wait for torchrun; raise RankFailed after a stall (the caller kills the processes)."""
    started = time.time()
    limit = _stall_limit(stall_timeout_seconds)
    while True:
        try:
            return proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            pass
        try:
            last, allowed = max(started, files.progress.stat().st_mtime), limit
        except OSError:  # no stage reported yet: the ranks are starting
            last, allowed = started, max(limit, STARTUP_GRACE_SECONDS)
        if time.time() - last > allowed:
            try:
                stage = json.loads(files.progress.read_text()).get("stage", "starting")
            except (OSError, ValueError):
                stage = "starting"
            raise RankFailed(
                f"no progress for {time.time() - last:.0f} s (while {stage}; "
                f"training.stall_timeout_seconds {stall_timeout_seconds}); every process was stopped"
            )


def _kill(proc: subprocess.Popen[bytes], files: Scratch, processes: int) -> None:
    """SIGTERM torchrun's group (it stops its ranks), then SIGKILL what is left, ranks included
    (each rank runs in a session of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=KILL_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    for rank in range(processes):
        with contextlib.suppress(OSError, ValueError):
            pid = int(files.pid(rank).read_text())
            # Only a process that is still this launch's rank (its command line names the scratch
            # folder): the id of one that ended may belong to another process by now.
            if str(files.root).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                os.kill(pid, signal.SIGKILL)


def _read_progress(files: Scratch, outcome: Any) -> dict[str, Any]:
    """Rank 0's progress so far, copied into ``outcome`` (its loss curve and steps)."""
    try:
        progress = json.loads(files.progress.read_text())
    except (OSError, ValueError):
        return {}
    outcome.loss_curve = [(int(s), float(v)) for s, v in progress.get("loss_curve", [])]
    outcome.steps = int(progress.get("step", 0))
    return dict(progress)


def _failure(files: Scratch, processes: int, code: int) -> Exception:
    """The error of the first rank that failed, or torchrun's own when no rank wrote one."""
    errors = []
    for rank in range(processes):
        with contextlib.suppress(OSError, ValueError):
            errors.append(json.loads(files.error(rank).read_text()))
    if not errors:
        return RankFailed(f"torchrun exited with code {code}: {_last_error_line(files)}")
    first = min(errors, key=lambda e: e["time"])
    if first["type"] == "DivergenceError":
        return DivergenceError(first["step"], first["loss"])
    where = f" ({first['where']})" if first.get("where") else ""
    failed = RankFailed(f"rank {first['rank']} of {processes}: {first['type']}: {first['message']}{where}")
    # The rank's error as the cause, rebuilt as the builtin it was, so an allocation failure in a
    # rank is recognised as one (peftcore.pipeline.failures.is_out_of_memory reads the chain).
    builtin = {"MemoryError": MemoryError, "OutOfMemoryError": MemoryError, "RuntimeError": RuntimeError}
    cause = builtin.get(first["type"], Exception)(first["message"])
    failed.__cause__ = cause
    return failed


def _last_error_line(files: Scratch) -> str:
    """The error a rank's stderr (or torchrun's own output) ends its traceback with; failing that,
    the last line of the newest log. Progress bars write to stderr too, so the newest line of the
    newest log is often a bar of a rank that did nothing wrong."""
    logs = sorted(files.logs.rglob("stderr.log"), key=lambda p: p.stat().st_mtime, reverse=True)
    last = None
    for path in [*logs, files.root / "torchrun.log"]:
        with contextlib.suppress(OSError):
            lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
            errors = [line for line in lines if _ERROR_LINE.match(line)]
            if errors:
                return errors[-1]
            last = last or (lines[-1] if lines else None)
    return last or "no output"


# "ValueError: ...", "torch.OutOfMemoryError: ...", "KeyboardInterrupt", "Segmentation fault".
_ERROR_LINE = re.compile(
    r"^([\w.]+(Error|Exception|Interrupt|Exit)\b|Segmentation fault|Killed\b|Fatal Python error)"
)


def _launched(files: Scratch, processes: int, launch_seconds: float) -> Launched:
    from peftcore.train.outcome import TrainOutcome

    data = json.loads(files.outcome.read_text())
    ranks = sorted(data["ranks"], key=lambda r: r["rank"])
    return Launched(
        outcome=TrainOutcome.from_dict(data["outcome"]),
        processes=processes,
        peak_memory_bytes_per_rank=[int(r["peak_memory_bytes"]) for r in ranks],
        peak_reserved_bytes_per_rank=[r["peak_reserved_bytes"] for r in ranks],
        memory_method=ranks[0]["memory_method"],
        trainable_params=data["trainable_params"],
        total_params=data["total_params"],
        launch_seconds=launch_seconds,
        trained=files.trained,
    )
