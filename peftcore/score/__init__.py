"""Scoring a model on a task's examples: metrics, per-example predictions, and what inference cost.

``from peftcore.score import score, ScoreResult``: ``score(model, fmt, examples, task,
settings, device=..., precision=...)`` picks the evaluator by ``task.type`` and returns a
:class:`ScoreResult` (see :mod:`peftcore.score.run`).

The modules, in the order a call goes through them:

- ``run``: ``score()``, the table of evaluators by task type, the inference context.
- ``evaluator``: what every evaluator gets (the run) and hands on (raw outputs, metric names).
- ``choices``, ``generation``, ``perplexity``: the evaluators of choice and classification,
  generation and language-modelling tasks.
- ``loglikelihood`` (summed log-probabilities of token requests), ``decoding`` (batched greedy
  decoding), ``batching`` (padding), ``model_capabilities`` (what the model accepts).
- ``metrics``: the metric registry and ``resolve_metric``; the metric functions live in
  ``text_metrics``, ``number_metrics``, ``label_metrics``, ``nll_metrics`` and
  ``semantic_metrics`` (``metric_registry`` and ``metric_inputs`` are what they share), and as
  local `evaluate` modules in ``metric_modules/``.
- ``judge``: the optional LLM judge.

``score`` and ``ScoreResult`` are loaded on first use: importing the package (as importing
``peftcore.score.metrics`` or ``peftcore.score.judge`` does) loads no evaluator, and nothing here
imports torch, transformers or sentence-transformers at import. Collection imports none of it:
specs check metric names against :mod:`peftcore.vocab.metrics`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from peftcore.score.run import ScoreResult, score, score_answer_losses

__all__ = ["ScoreResult", "score", "score_answer_losses"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from peftcore.score import run

        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
