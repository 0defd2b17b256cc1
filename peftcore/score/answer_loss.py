"""The loss of each example's answer given its prompt: a search's objective that every task has.

Each example's answer (``target``, the tokens training puts its loss on) is scored after its
prompt by :func:`peftcore.score.loglikelihood.token_loglikelihoods`; its loss is the mean
negative log-likelihood of the answer's tokens (natural log). The split's loss is the mean over
examples, each example counting once however long its answer (so its standard error is the
closed form of a mean, :func:`peftcore.stats.intervals.mean_interval`); training's logged loss instead
weights every answer token alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from peftcore.data.example import Example
from peftcore.score.batching import empty_context_token, pad_token_id
from peftcore.score.loglikelihood import TokenRequest, token_loglikelihoods
from peftcore.train.prompting import PromptFormat


def answer_requests(fmt: PromptFormat, examples: Sequence[Example], max_length: int) -> list[TokenRequest]:
    """One request per example: its answer's tokens after its prompt's, at most ``max_length``
    tokens fed (a prompt too long loses its start; an answer too long, its end).

    ``ValueError`` for an example whose answer encodes to no tokens.
    """
    requests = []
    for example in examples:
        answer = fmt.encode_continuation(example.target)[: max(1, max_length - 1)]
        if not answer:
            raise ValueError(f"example {example.uid}: its answer {example.target!r} encodes to no tokens")
        context = fmt.encode_context(example.prompt) or [empty_context_token(fmt)]
        context = context[-(max_length + 1 - len(answer)) :]
        requests.append(TokenRequest(tuple(context + answer), len(context)))
    return requests


def answer_losses(
    model: Any,
    fmt: PromptFormat,
    examples: Sequence[Example],
    *,
    batch_size: int,
    device: str,
    max_length: int,
) -> list[float]:
    """Each example's answer loss (mean token NLL), in the order of ``examples``. Run it under
    the scoring precision and inference mode (:func:`peftcore.score.run.score_answer_loss`)."""
    requests = answer_requests(fmt, examples, max_length)
    sums, _ = token_loglikelihoods(
        model, requests, batch_size=batch_size, pad_id=pad_token_id(fmt), device=device
    )
    return [-total / (len(r.tokens) - r.start) for total, r in zip(sums, requests, strict=True)]
