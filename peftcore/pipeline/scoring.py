"""What a case's scoring adds beyond the task's metrics on held_out and seen: a search trial's
scores on the tuning split, with the answers' loss, and LLM-as-judge scores of generated answers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from peftcore.data.example import TaskData
from peftcore.spec.cases import Case
from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    from peftcore.score.run import ScoreResult


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
