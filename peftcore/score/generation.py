"""The evaluator of ``generation`` tasks: batched greedy decoding (:mod:`peftcore.score.decoding`),
cut at the task's stop strings, reduced by ``generation.extract`` (``none``, ``first_line``,
``number``) and compared with ``Example.answers``.

Each prediction holds the ``generated`` text (cut at the first stop string) and the
``answer`` the metrics saw. ``abs_diff`` brings ``number_unparseable_rate`` along: it leaves
out answers without a number, and the rate says how many.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from peftcore.data.example import Example
from peftcore.score.decoding import generate_token_ids, generation_contexts
from peftcore.score.evaluator import (
    Evaluator,
    ExampleScores,
    Metrics,
    Predictions,
    RawOutputs,
    ScoringRun,
    evaluate_metrics,
    metric_names,
)
from peftcore.score.number_metrics import extract_number
from peftcore.vocab.metrics import EVALUATOR_METRICS

if TYPE_CHECKING:
    from peftcore.spec import EvalSettings, TaskSpec


def max_new_tokens(task: TaskSpec, settings: EvalSettings) -> int:
    """Tokens to generate: the settings' ``max_new_tokens`` if set, else the task's."""
    return settings.max_new_tokens if settings.max_new_tokens is not None else task.generation.max_new_tokens


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string.

    >>> cut_at_stop(" Paris\\nQuestion: next", ["\\n", "Question:"])
    ' Paris'
    """
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def extract_answer(text: str, how: str) -> str:
    """The answer the metrics see: the cut text reduced by the task's ``generation.extract``.

    ``ValueError`` for an unknown ``how``.

    >>> extract_answer("  Paris.\\nMore", "first_line")
    'Paris.'
    >>> extract_answer("3 + 4 = 7 apples", "number")
    '7'
    >>> extract_answer("no idea", "number")
    ''
    """
    if how == "none":
        return text.strip()
    if how == "first_line":
        lines = [line.strip() for line in text.strip().splitlines()]
        return lines[0] if lines else ""
    if how == "number":
        value = extract_number(text)
        if value is None:
            return ""
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    raise ValueError(f"unknown generation.extract {how!r}; expected none, first_line or number")


def _infer_generation(run: ScoringRun, examples: Sequence[Example]) -> RawOutputs:
    new_tokens = max_new_tokens(run.task, run.settings)
    contexts = generation_contexts(run.fmt, [e.prompt for e in examples], run.max_length - new_tokens)
    stop = run.task.generation.stop
    rows, stats = generate_token_ids(
        run.model,
        run.fmt,
        contexts,
        new_tokens=new_tokens,
        stop=stop,
        batch_size=run.settings.batch_size,
        device=run.device,
    )
    # Cut at the first stop string: the last token may run past it.
    texts = [cut_at_stop(run.fmt.tokenizer.decode(ids, skip_special_tokens=True), stop) for ids in rows]
    return RawOutputs(texts, stats)


def _finish_generation(
    run: ScoringRun, examples: Sequence[Example], raw: RawOutputs
) -> tuple[Metrics, Predictions, ExampleScores]:
    how = run.task.generation.extract
    answers = [extract_answer(text, how) for text in raw.values]
    references = [list(example.answers) for example in examples]
    # abs_diff leaves out answers without a number; report how many.
    extra = ("number_unparseable_rate",) if "abs_diff" in run.task.metrics else ()
    names = [*metric_names(run.task, ("texts",)), *extra]
    metrics, kept = evaluate_metrics(names, lambda _: (answers, references), examples)
    predictions = [
        {"uid": e.uid, "generated": text, "answer": answer}
        for e, text, answer in zip(examples, raw.values, answers, strict=True)
    ]
    return metrics, predictions, kept


GENERATION = Evaluator(("texts",), EVALUATOR_METRICS["generation"], _infer_generation, _finish_generation)
