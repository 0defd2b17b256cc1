"""One case, end to end: fresh model -> method -> train -> save adapter -> score -> record.

``run_case`` is what the session calls for a case that has to run (or re-score an earlier
adapter). Everything the case measures goes into its record (:mod:`peftcore.vocab.record`),
which is written before ``run_case`` returns, whatever happened. A case that fails returns its
record (status ``failed``, ``oom``) with the error; Ctrl-C or SIGTERM writes the record as
``cancelled`` and lets the interrupt go on.
"""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from peftcore.data.example import TaskData
from peftcore.device import device_info, precision_choice, scoring_precision
from peftcore.errors import DivergenceError, PeftcoreError, SpecError, UnchangedWeightsError
from peftcore.measure import PeakMemory, release_freed_memory
from peftcore.models.load import LoadedBase
from peftcore.pipeline.failures import (
    ONEDNN_FAILED,
    CaseOutOfMemory,
    cpu_kernels_broken,
    is_out_of_memory,
    one_line,
)
from peftcore.pipeline.identity import Identity
from peftcore.pipeline.off_task import OffTaskData, general_text_figures, other_tasks_scores
from peftcore.pipeline.saving import save_adapter
from peftcore.pipeline.scoring import judge_scores, trial_scores
from peftcore.pipeline.signals import interrupts_deferred
from peftcore.results.frame import record_numbers
from peftcore.results.provenance import git_state, now, package_versions
from peftcore.results.store import Earlier, write_record
from peftcore.spec.cases import Case
from peftcore.train.prompting import PromptFormat, Truncation
from peftcore.vocab.record import OOD_PREFIX, RECORD_FORMAT, TUNE_SPLIT, Record, TrainingFigures, keep_scores

if TYPE_CHECKING:
    from peftcore.score.run import ScoreResult
    from peftcore.train.launch import Launched
    from peftcore.train.outcome import TrainOutcome

T = TypeVar("T")
# Runs ``fn`` once and returns its result; ``what`` is "training" or "scoring". The pytest plugin
# times it with pytest-benchmark (one round: a default of several rounds would train again).
Timer = Callable[[str, Callable[[], Any]], Any]


def untimed(what: str, fn: Callable[[], T]) -> T:
    return fn()


@dataclass
class CaseContext:
    """What a case needs from outside: where to write, on what device, how to time it."""

    run_dir: Path
    run_id: str
    device: str
    repo_root: Path
    identity: Identity
    reuse: Earlier | None = None  # an earlier record whose adapter is re-scored instead of trained
    timer: Timer = untimed
    keep_full_models: bool = False
    off_task: OffTaskData = field(default_factory=OffTaskData)  # scored after the task (eval block)
    # Told of the record once it is written, whatever happened (an interrupted case included).
    keep: Callable[[Record], None] = lambda record: None


@dataclass(frozen=True)
class Executed:
    """A case that ran: its record (already written), and the error that stopped it, if any."""

    record: Record
    error: Exception | None = None
    stops_session: str | None = None  # why no further case can run in this process


def run_case(case: Case, base: LoadedBase, data: TaskData, ctx: CaseContext) -> Executed:
    """Train and score one case and write its record.

    A failure is classified in the record: ``failed`` (divergence, an exception), ``oom`` (with
    the peak reached and what would help) or ``cancelled`` (Ctrl-C / SIGTERM, with how far it
    got; the interrupt is raised again). The model is dropped before the error is returned, so
    its memory is released. An out-of-memory after which this process cannot run another case
    (oneDNN, see :func:`peftcore.pipeline.failures.cpu_kernels_broken`) says why in
    ``Executed.stops_session``.
    """
    from peftcore.score.metrics import resolve_metric

    for task in (case.task, *case.also_score):  # an unknown or unreachable metric fails now,
        for name in task.metrics:  # not after training
            resolve_metric(name)
    record = _new_record(case, base, data, ctx)
    state = _CaseState(memory=PeakMemory(ctx.device))
    error: Exception | None = None
    broken: str | None = None
    try:
        _train_and_score(case, base, data, ctx, record, state)
        record["status"] = "finished"
    except (DivergenceError, UnchangedWeightsError) as err:
        record["reason"] = str(err)
        record["training"] = _partial_training(state)
        error = err
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        partial = _partial_training(state)
        record["training"] = partial
        steps = partial.get("steps")
        at_step = f" at step {steps} of {case.training.max_steps}" if state.stage == "training" else ""
        record["reason"] = f"interrupted during {state.stage}{at_step}"
        raise
    except Exception as err:
        out_of_memory = is_out_of_memory(err)
        if not out_of_memory and ctx.device == "cpu" and ONEDNN_FAILED in str(err):
            # oneDNN reports a failed allocation of kernel code as a failed primitive; it was
            # one when this thread can no longer build any kernel. (Probing cannot make things
            # worse: either the thread is broken already or the failure was not about memory.)
            broken = cpu_kernels_broken()
            out_of_memory = broken is not None
        if out_of_memory:
            record["status"] = "oom"
            record["reason"] = one_line(err, 160)  # completed below, once the memory is released
        else:
            record["reason"] = one_line(err)
            record["training"] = _partial_training(state)
            error = err
    finally:
        # A second Ctrl-C (or SIGTERM) during this cleanup waits until the record is written.
        with interrupts_deferred():
            if state.trackers is not None:  # the case did not finish: its runs close as failed
                state.trackers.close(ok=False)
            state.model = None
            release_freed_memory()
            stops_session = None
            if record["status"] == "oom":
                # A new error, outside the except block: it does not carry the failed
                # allocation's traceback (and through its frames, the model).
                error = _out_of_memory(case, ctx, record, state, broken)
                stops_session = error.stops_session
            record["provenance"]["finished_at"] = now()
            with contextlib.suppress(OSError) if record["status"] != "finished" else contextlib.nullcontext():
                write_record(ctx.run_dir, record)
            ctx.keep(record)
    return Executed(record, error, stops_session)


def record_early_failure(case: Case, ctx: CaseContext, stage: str, error: Exception) -> Executed:
    """The record of a case that failed before it could run (its data or model could not be
    had): status ``failed``, the one-line reason naming the stage, no figures. Written like any."""
    reason = str(error) if isinstance(error, PeftcoreError) else one_line(error)
    record = _blank_record(case, ctx, {})
    record["reason"] = f"{stage}: {reason}"
    record["provenance"]["finished_at"] = now()
    with contextlib.suppress(OSError):
        write_record(ctx.run_dir, record)
    ctx.keep(record)
    return Executed(record, error)


def _out_of_memory(
    case: Case, ctx: CaseContext, record: Record, state: _CaseState, broken: str | None
) -> CaseOutOfMemory:
    """Complete the record of a case that ran out of memory (its memory released by now)."""
    if broken is None and ctx.device == "cpu":
        broken = cpu_kernels_broken()  # probed only now: with memory short it could break it
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


@dataclass
class _CaseState:
    """How far a case got, for the record of a case that does not finish."""

    memory: PeakMemory
    stage: str = "setup"
    model: Any = None
    outcome: TrainOutcome | None = None  # filled as training goes
    looks: Any = None  # a pruned search's trial's looks at its loss (peftcore.pipeline.pruning.Looks)
    trackers: Any = None  # the case's open tracker runs (training.report_to), until closed


def _blank_record(case: Case, ctx: CaseContext, provenance: dict[str, Any]) -> Record:
    """A case's record before anything is known of how it went: its identity and resolved spec,
    status ``failed`` until the case says otherwise, no figures; ``provenance`` adds to the
    versions, git state and host."""
    return {
        "format": RECORD_FORMAT,
        "run_id": ctx.run_id,
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
            **git_state(ctx.repo_root),
            "host": platform.node(),
            "started_at": now(),
            "finished_at": None,
        },
        "adapter_dir": None,
        "reused_training_from": None,
    }


def _new_record(case: Case, base: LoadedBase, data: TaskData, ctx: CaseContext) -> Record:
    record = _blank_record(
        case,
        ctx,
        {
            "device": device_info(ctx.device),
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
    record["case_hash"] = ctx.identity.case_hash
    record["training_hash"] = ctx.identity.training_hash
    record["base_model"] = cast(Any, base.describe())
    return record


def _train_and_score(
    case: Case, base: LoadedBase, data: TaskData, ctx: CaseContext, record: Record, state: _CaseState
) -> None:
    """The case's model made ready one of four ways, then scored, into ``record``. The model is
    kept in ``state`` (never in a local), so :func:`run_case` can drop it whatever happens."""
    fmt = PromptFormat.for_model(base.tokenizer, case.model.chat_template)
    if case.training.report_to:  # opened before the measured window: wandb starts a service process
        from peftcore.train.trackers import Trackers

        state.stage = "opening the tracker runs"
        state.trackers = Trackers(case.training.report_to, case.case_id, case.resolved(), ctx.run_dir)
    if ctx.reuse is not None:
        ready = _rescore_earlier(case, base, ctx, ctx.reuse, state)
    elif not case.method.trains:
        ready = _untrained(case, base, state)
    elif case.training.processes > 1:  # under torchrun (peftcore.train.launch), not in this process
        ready = _train_across_processes(case, base, _train_set(case, data, fmt, state), ctx, state)
    else:
        callbacks = _pruning(case, data, fmt, ctx, state)
        ready = _train_in_process(case, base, _train_set(case, data, fmt, state), ctx, state, callbacks)
    record["reused_training_from"] = ready.reused_training_from
    record["adapter_dir"] = ready.adapter_dir
    record["training"] = ready.training
    # A trial the pruner stopped is not scored: hopeless, it is never chosen (its looks say why).
    if state.looks is None or state.looks.pruned_at_step is None:
        _score(case, base, data, fmt, ctx, state, record, timed=ready.timed_by_scoring)
    if case.tuning is not None:
        from peftcore.pipeline.tuning import record_block

        record["tuning"] = record_block(case, record, state.looks.block() if state.looks else None)
    if state.trackers is not None:
        state.stage = "logging to the trackers"
        state.trackers.finish(record_numbers(record), step=int(ready.training.get("steps") or 0))
        state.trackers = None


@dataclass(frozen=True)
class _Ready:
    """A case's model ready to score (in ``_CaseState.model``), and what the record says of it."""

    training: TrainingFigures
    adapter_dir: str | None = None  # relative to the run folder
    reused_training_from: str | None = None  # the run that trained a re-scored adapter
    timed_by_scoring: bool = False  # untrained or re-scored: timed by its scoring, the work it does


@dataclass(frozen=True)
class _TrainSet:
    """The case's training examples, tokenized, and what ``training.max_length`` cut from them."""

    examples: Any  # a datasets.Dataset (prompting.tokenized_train_set)
    cut: Truncation


def _rescore_earlier(
    case: Case, base: LoadedBase, ctx: CaseContext, earlier: Earlier, state: _CaseState
) -> _Ready:
    """The adapter an earlier run trained (``ctx.reuse``), loaded on a fresh base. Its training
    figures are the earlier record's: the adapter reloaded for scoring is frozen (0 trainable)."""
    from peftcore.train import methods

    with state.memory:  # not recorded: the earlier record has the training's memory
        _start_preparation(case, state)
        state.model = methods.load_trained(base.fresh(), earlier.adapter(), case.method)
        counts = _parameter_counts(*methods.parameter_counts(state.model))
    return _Ready(
        training=cast(TrainingFigures, {**counts, **(earlier.record.get("training") or {})}),
        adapter_dir=os.path.relpath(earlier.adapter() or "", ctx.run_dir.resolve()),
        reused_training_from=earlier.trained_in,
        timed_by_scoring=True,
    )


def _untrained(case: Case, base: LoadedBase, state: _CaseState) -> _Ready:
    """A method that trains nothing (the base as it is): a fresh copy, with its memory."""
    from peftcore.train import methods

    with state.memory:
        _start_preparation(case, state)
        state.model = methods.apply_method(base.fresh(), case.method, case.training)
        counts = _parameter_counts(*methods.parameter_counts(state.model))
    return _Ready(training={**counts, **_memory_figures(state.memory)}, timed_by_scoring=True)


def _pruning(case: Case, data: TaskData, fmt: PromptFormat, ctx: CaseContext, state: _CaseState) -> list[Any]:
    """A pruned search's trial's callback (its looks kept in ``state``); none for other cases.
    Made before the case's memory window: it opens the study."""
    from peftcore.pipeline.pruning import Looks, pruned_search_trial, pruning_callback

    if not pruned_search_trial(case):
        return []
    state.stage = "opening the study to report to"
    state.looks = Looks.of(case)
    callback = pruning_callback(
        ctx.run_dir,
        case,
        data,
        fmt,
        device=ctx.device,
        precision=scoring_precision(case.eval.precision),
        model=lambda: state.model,
        looks=state.looks,
    )
    return [callback]


def _train_in_process(
    case: Case,
    base: LoadedBase,
    train_set: _TrainSet,
    ctx: CaseContext,
    state: _CaseState,
    callbacks: list[Any] | None = None,
) -> _Ready:
    """The method applied to a fresh base and trained here, timed as the case's training; the
    trained weights saved. ``callbacks``: more TrainerCallbacks (a pruned trial's)."""
    import peftcore.train.trainer as train
    from peftcore.train import methods
    from peftcore.train.flops import training_peaks

    budget = case.training
    # Measured before the memory window: its matrices are not the case's.
    state.stage = "measuring the device's matmul peak"
    choice = precision_choice(budget.precision, ctx.device)
    peak_flops = training_peaks(ctx.device, choice.precision)
    with state.memory:
        _start_preparation(case, state)
        state.model = methods.apply_method(base.fresh(), case.method, budget)
        counts = _parameter_counts(*methods.parameter_counts(state.model))
        state.stage = "training"
        with tempfile.TemporaryDirectory(prefix="peftcore-trainer-") as scratch:
            state.outcome = so_far = train.TrainOutcome()  # kept by a case that stops

            def fit() -> TrainOutcome:
                return train.train(
                    state.model,
                    base.tokenizer,
                    train_set.examples,
                    budget,
                    case.method,
                    device=ctx.device,
                    output_dir=Path(scratch),
                    case_id=case.case_id,
                    outcome=so_far,
                    trackers=state.trackers,
                    peak_flops=peak_flops,
                    extra_callbacks=callbacks or (),
                )

            outcome: TrainOutcome = ctx.timer("training", fit)
        adapter_dir, trained = _save_trained(case, ctx, state, outcome, train_set)
    training = cast(TrainingFigures, {**counts, **trained, **choice.record_fields()})
    return _Ready(training={**training, **_memory_figures(state.memory)}, adapter_dir=adapter_dir)


def _train_across_processes(
    case: Case, base: LoadedBase, train_set: _TrainSet, ctx: CaseContext, state: _CaseState
) -> _Ready:
    """Trained over ``training.processes`` processes (peftcore.train.launch), timed as the
    case's training; the trained weights loaded onto a fresh base here and saved. Its memory
    figures are the ranks' (the largest, and each rank's)."""
    from peftcore.train.launch import train_across_processes
    from peftcore.train.outcome import TrainOutcome

    with state.memory:
        _start_preparation(case, state)
        with tempfile.TemporaryDirectory(prefix="peftcore-ranks-") as scratch:
            state.stage = "training"
            state.outcome = so_far = TrainOutcome()  # rank 0's loss curve as it goes, for a case that stops

            def fit() -> Launched:
                return train_across_processes(
                    case,
                    train_set.examples,
                    device=ctx.device,
                    scratch=Path(scratch),
                    outcome=so_far,
                    logs_to=ctx.run_dir / "ranks" / case.case_id,  # kept when the launch does not finish
                )

            launched: Launched = ctx.timer("training", fit)
            state.stage = "loading the trained weights"
            state.model = launched.trained_model(base, case.method)
        # Counted as trained (the adapter loaded for scoring is frozen).
        counts = _parameter_counts(launched.trainable_params, launched.total_params)
        adapter_dir, trained = _save_trained(case, ctx, state, launched.outcome, train_set)
    # The ranks trained: their memory, not this process's, where both have a figure.
    training: TrainingFigures = {
        **counts,
        **trained,
        **_memory_figures(state.memory),
        **_across_processes_figures(launched),
    }
    return _Ready(training=training, adapter_dir=adapter_dir)


def _train_set(case: Case, data: TaskData, fmt: PromptFormat, state: _CaseState) -> _TrainSet:
    """The train split tokenized (cached); SpecError when ``training.max_length`` would leave
    too little of the prompts to train on."""
    from peftcore.train import prompting

    state.stage = "tokenization"
    budget = case.training
    lm = case.task.type == "language_modeling"
    cut = prompting.truncation(data.train, fmt, budget.max_length, lm=lm)
    refusal = cut.refusal(budget.max_length)
    if refusal is not None:
        raise SpecError(case.task.file or case.task.name, "training.max_length", refusal)
    examples = prompting.tokenized_train_set(
        data.train,
        fmt,
        budget.max_length,
        lm=lm,
        data_key=f"{data.data_sha256}:{data.split_sha256}",
    )
    return _TrainSet(examples, cut)


def _start_preparation(case: Case, state: _CaseState) -> None:
    """Inside the memory window, before the model is made: every mode seeds the same way."""
    from transformers import set_seed

    state.stage = "model preparation"
    set_seed(case.training.seed)


def _parameter_counts(trainable: int, total: int) -> TrainingFigures:
    return {
        "trainable_params": trainable,
        "total_params": total,
        "trainable_percent": 100.0 * trainable / total if total else 0.0,
    }


def _memory_figures(memory: PeakMemory) -> TrainingFigures:
    """The case's peak memory, once its window has closed."""
    return {
        "peak_memory_bytes": memory.peak_bytes,
        "peak_reserved_bytes": memory.peak_reserved_bytes,
        "memory_method": memory.method,
    }


def _save_trained(
    case: Case, ctx: CaseContext, state: _CaseState, outcome: TrainOutcome, train_set: _TrainSet
) -> tuple[str | None, TrainingFigures]:
    """Save the trained weights; return their folder (None: not kept) and the training's figures."""
    state.stage = "saving the adapter"
    adapter_bytes, adapter_dir = save_adapter(state.model, case, ctx.run_dir, keep_full=ctx.keep_full_models)
    return adapter_dir, outcome.figures(adapter_bytes=adapter_bytes, truncation=train_set.cut.as_dict())


def _score(
    case: Case,
    base: LoadedBase,
    data: TaskData,
    fmt: PromptFormat,
    ctx: CaseContext,
    state: _CaseState,
    record: Record,
    *,
    timed: bool,
) -> None:
    """Score the case's model on its held-out and seen examples (``timed``: as the case's timed
    work), judge them when the profile asks, then score it outside the task; into ``record``.
    A search's trial is scored on the tuning split alone (:func:`~peftcore.pipeline.scoring.trial_scores`)."""
    from peftcore import score as scoring

    state.stage = "scoring"
    precision = scoring_precision(case.eval.precision)
    if case.tuning is not None and case.tuning.kind == "trial":
        result = trial_scores(case, state.model, data, fmt, ctx.device, precision)
        keep_scores(record, TUNE_SPLIT, result)
        record["inference"] = cast(Any, result.inference)
        return

    def score_splits() -> dict[str, ScoreResult]:
        return {
            split: scoring.score(
                state.model,
                fmt,
                data.split(split),
                case.task,
                case.eval,
                device=ctx.device,
                precision=precision,
            )
            for split in ("held_out", "seen")
            if data.split(split)  # a scoring-only profile has no seen examples
        }

    results: dict[str, ScoreResult] = ctx.timer("scoring", score_splits) if timed else score_splits()
    for split, result in results.items():
        keep_scores(record, split, result)
    if case.eval.judge is not None and case.task.type == "generation":
        state.stage = "judging"
        for split, scores in judge_scores(case, data, results):
            record["metrics"][split].update(scores)
    record["inference"] = cast(Any, results["held_out"].inference)
    record["predictions"] = {"held_out": results["held_out"].predictions[:20]}
    if ctx.off_task:
        state.stage = "scoring outside the task"
        if ctx.off_task.general_text is not None:
            record["general_text"] = general_text_figures(
                case, base, state.model, fmt, ctx.off_task.general_text, ctx.device, precision
            )
        for task, result in other_tasks_scores(
            case, state.model, fmt, ctx.off_task, device=ctx.device, precision=precision
        ):
            keep_scores(record, OOD_PREFIX + task, result)


def _across_processes_figures(launched: Launched) -> TrainingFigures:
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


def _partial_training(state: _CaseState) -> TrainingFigures:
    info: TrainingFigures = {"peak_memory_bytes": state.memory.read(), "memory_method": state.memory.method}
    if state.outcome is not None:
        info.update(state.outcome.partial_figures())
    return info
