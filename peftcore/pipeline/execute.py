"""One case, end to end: fresh model -> method -> train -> save adapter -> score -> record.

``run_case`` is what the session calls for a case that has to run (or re-score an earlier
adapter). Everything the case measures goes into its record (:mod:`peftcore.vocab.record`),
which is written before ``run_case`` returns, whatever happened. A case that fails returns its
record (status ``failed``, ``oom``) with the error; Ctrl-C or SIGTERM writes the record as
``cancelled`` and lets the interrupt go on.

Here: the case's path, one function per way its model is made ready. The record's assembly is
:mod:`peftcore.pipeline.case_record`; scoring the ready model, :func:`peftcore.pipeline.scoring.score_case`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from peftcore.data.example import TaskData
from peftcore.device import precision_choice, scoring_precision
from peftcore.errors import DivergenceError, PeftcoreError, SpecError, UnchangedWeightsError
from peftcore.measure import PeakMemory, release_freed_memory
from peftcore.models.load import LoadedBase
from peftcore.pipeline.case_record import (
    CaseState,
    across_processes_figures,
    blank_record,
    memory_figures,
    new_record,
    parameter_counts,
    partial_training,
    record_out_of_memory,
)
from peftcore.pipeline.failures import ONEDNN_FAILED, cpu_kernels_broken, is_out_of_memory, one_line
from peftcore.pipeline.identity import Identity
from peftcore.pipeline.off_task import OffTaskData
from peftcore.pipeline.saving import save_adapter
from peftcore.pipeline.scoring import score_case
from peftcore.pipeline.signals import interrupts_deferred
from peftcore.results.frame import record_numbers
from peftcore.results.provenance import now
from peftcore.results.store import Earlier, write_record
from peftcore.spec.cases import Case
from peftcore.train.prompting import PromptFormat, Truncation
from peftcore.vocab.record import Record, TrainingFigures

if TYPE_CHECKING:
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
    record = new_record(
        case, base, data, run_id=ctx.run_id, repo_root=ctx.repo_root, device=ctx.device, identity=ctx.identity
    )
    state = CaseState(memory=PeakMemory(ctx.device))
    error: Exception | None = None
    broken: str | None = None
    try:
        _train_and_score(case, base, data, ctx, record, state)
        record["status"] = "finished"
    except (DivergenceError, UnchangedWeightsError) as err:
        record["reason"] = str(err)
        record["training"] = partial_training(state)
        error = err
    except KeyboardInterrupt:
        record["status"] = "cancelled"
        partial = partial_training(state)
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
            record["training"] = partial_training(state)
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
                error = record_out_of_memory(case, ctx.device, record, state, broken)
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
    record = blank_record(case, ctx.run_id, ctx.repo_root, {})
    record["reason"] = f"{stage}: {reason}"
    record["provenance"]["finished_at"] = now()
    with contextlib.suppress(OSError):
        write_record(ctx.run_dir, record)
    ctx.keep(record)
    return Executed(record, error)


def _train_and_score(
    case: Case, base: LoadedBase, data: TaskData, ctx: CaseContext, record: Record, state: CaseState
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
        score_case(
            case,
            base,
            data,
            fmt,
            state,
            record,
            device=ctx.device,
            off_task=ctx.off_task,
            timer=ctx.timer,
            timed=ready.timed_by_scoring,
        )
    if case.tuning is not None:
        from peftcore.pipeline.tuning import record_block

        record["tuning"] = record_block(case, record, state.looks.block() if state.looks else None)
    if state.trackers is not None:
        state.stage = "logging to the trackers"
        state.trackers.finish(record_numbers(record), step=int(ready.training.get("steps") or 0))
        state.trackers = None


@dataclass(frozen=True)
class _Ready:
    """A case's model ready to score (in ``CaseState.model``), and what the record says of it."""

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
    case: Case, base: LoadedBase, ctx: CaseContext, earlier: Earlier, state: CaseState
) -> _Ready:
    """The adapter an earlier run trained (``ctx.reuse``), loaded on a fresh base. Its training
    figures are the earlier record's: the adapter reloaded for scoring is frozen (0 trainable)."""
    from peftcore.train import methods

    with state.memory:  # not recorded: the earlier record has the training's memory
        _start_preparation(case, state)
        state.model = methods.load_trained(base.fresh(), earlier.adapter(), case.method)
        counts = parameter_counts(*methods.parameter_counts(state.model))
    return _Ready(
        training=cast(TrainingFigures, {**counts, **(earlier.record.get("training") or {})}),
        adapter_dir=os.path.relpath(earlier.adapter() or "", ctx.run_dir.resolve()),
        reused_training_from=earlier.trained_in,
        timed_by_scoring=True,
    )


def _untrained(case: Case, base: LoadedBase, state: CaseState) -> _Ready:
    """A method that trains nothing (the base as it is): a fresh copy, with its memory."""
    from peftcore.train import methods

    with state.memory:
        _start_preparation(case, state)
        state.model = methods.apply_method(base.fresh(), case.method, case.training)
        counts = parameter_counts(*methods.parameter_counts(state.model))
    return _Ready(training={**counts, **memory_figures(state.memory)}, timed_by_scoring=True)


def _pruning(case: Case, data: TaskData, fmt: PromptFormat, ctx: CaseContext, state: CaseState) -> list[Any]:
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
    state: CaseState,
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
        counts = parameter_counts(*methods.parameter_counts(state.model))
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
    return _Ready(training={**training, **memory_figures(state.memory)}, adapter_dir=adapter_dir)


def _train_across_processes(
    case: Case, base: LoadedBase, train_set: _TrainSet, ctx: CaseContext, state: CaseState
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
        counts = parameter_counts(launched.trainable_params, launched.total_params)
        adapter_dir, trained = _save_trained(case, ctx, state, launched.outcome, train_set)
    # The ranks trained: their memory, not this process's, where both have a figure.
    training: TrainingFigures = {
        **counts,
        **trained,
        **memory_figures(state.memory),
        **across_processes_figures(launched),
    }
    return _Ready(training=training, adapter_dir=adapter_dir)


def _train_set(case: Case, data: TaskData, fmt: PromptFormat, state: CaseState) -> _TrainSet:
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


def _start_preparation(case: Case, state: CaseState) -> None:
    """Inside the memory window, before the model is made: every mode seeds the same way."""
    from transformers import set_seed

    state.stage = "model preparation"
    set_seed(case.training.seed)


def _save_trained(
    case: Case, ctx: CaseContext, state: CaseState, outcome: TrainOutcome, train_set: _TrainSet
) -> tuple[str | None, TrainingFigures]:
    """Save the trained weights; return their folder (None: not kept) and the training's figures."""
    state.stage = "saving the adapter"
    adapter_bytes, adapter_dir = save_adapter(state.model, case, ctx.run_dir, keep_full=ctx.keep_full_models)
    return adapter_dir, outcome.figures(adapter_bytes=adapter_bytes, truncation=train_set.cut.as_dict())
