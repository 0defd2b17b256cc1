"""A case's scoring, once its model is ready (:func:`score_case`): the task's metrics on held_out
and seen, and what a profile adds beyond them: a search trial's scores on the tuning split, with
the answers' loss, LLM-as-judge scores of generated answers, and the scores outside the task
(:mod:`peftcore.pipeline.off_task`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from peftcore.data.example import TaskData
from peftcore.device import scoring_precision
from peftcore.models.load import LoadedBase
from peftcore.pipeline.off_task import OffTaskData, general_text_figures, other_tasks_scores
from peftcore.spec.cases import Case
from peftcore.train.prompting import PromptFormat
from peftcore.vocab.record import OOD_PREFIX, TUNE_SPLIT, Record, keep_scores

if TYPE_CHECKING:
    from peftcore.pipeline.case_record import CaseState
    from peftcore.score.run import ScoreResult


def score_case(
    case: Case,
    base: LoadedBase,
    data: TaskData,
    fmt: PromptFormat,
    state: CaseState,
    record: Record,
    *,
    device: str,
    off_task: OffTaskData,
    timer: Callable[[str, Callable[[], Any]], Any],
    timed: bool,
) -> None:
    """Score the case's model (``state.model``) on its held-out and seen examples (``timed``: as
    the case's timed work, by ``timer``), judge them when the profile asks, then score it outside
    the task (``off_task``); into ``record``. A search's trial is scored on the tuning split alone
    (:func:`trial_scores`)."""
    from peftcore import score as scoring

    state.stage = "scoring"
    precision = scoring_precision(case.eval.precision)
    if case.tuning is not None and case.tuning.kind == "trial":
        result = trial_scores(case, state.model, data, fmt, device, precision)
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
                device=device,
                precision=precision,
            )
            for split in ("held_out", "seen")
            if data.split(split)  # a scoring-only profile has no seen examples
        }

    results: dict[str, ScoreResult] = timer("scoring", score_splits) if timed else score_splits()
    for split, result in results.items():
        keep_scores(record, split, result)
    if case.eval.judge is not None and case.task.type == "generation":
        state.stage = "judging"
        for split, scores in judge_scores(case, data, results):
            record["metrics"][split].update(scores)
    record["inference"] = cast(Any, results["held_out"].inference)
    record["predictions"] = {"held_out": results["held_out"].predictions[:20]}
    if off_task:
        state.stage = "scoring outside the task"
        if off_task.general_text is not None:
            record["general_text"] = general_text_figures(
                case, base, state.model, fmt, off_task.general_text, device, precision
            )
        for task, result in other_tasks_scores(
            case, state.model, fmt, off_task, device=device, precision=precision
        ):
            keep_scores(record, OOD_PREFIX + task, result)


def trial_scores(
    case: Case, model: Any, data: TaskData, fmt: PromptFormat, device: str, precision: str
) -> ScoreResult:
    """A trial's scores on the tuning split: the task's metrics and the answers' loss (the
    objective every task has), each with its uncertainty; held_out and seen are never scored."""
    from peftcore import score as scoring
    from peftcore.score.uncertainty import metric_intervals
    from peftcore.spec.tuning import LOSS

    examples = data.split("tune")
    result = scoring.score(model, fmt, examples, case.task, case.eval, device=device, precision=precision)
    losses = scoring.score_answer_losses(model, fmt, examples, case.eval, device=device, precision=precision)
    metrics = {**result.metrics, LOSS: sum(losses) / len(losses)}
    kept = {**result.examples, "scores": {**(result.examples.get("scores") or {}), LOSS: losses}}
    return replace(result, metrics=metrics, examples=kept, uncertainty=metric_intervals(metrics, kept))


def judge_scores(
    case: Case, data: TaskData, results: dict[str, ScoreResult]
) -> Iterator[tuple[str, dict[str, float]]]:
    """LLM-as-judge scores of the generated answers, next to the task's metrics (profile
    ``eval.judge``; off by default): each split's mean scores, yielded as it is judged (a case
    that fails on a later split keeps the earlier ones). The question is the prompt the model
    answered."""
    from peftcore.score.judge import Judge

    assert case.eval.judge is not None
    judge = Judge(case.eval.judge)
    for split, result in results.items():
        examples = data.split(split)
        answers = [p["generated"] for p in result.predictions]
        references = [list(e.answers) or e.target for e in examples]
        yield split, judge.score_many([e.prompt for e in examples], answers, references)
