"""Mean next-token cross-entropy of a model on general text: the measure forgetting is made of.

Each text is tokenized as a language-modelling example is (special tokens included), cut to its
first ``max_tokens`` tokens, and every token but the first is scored given the ones before it
(the targets shifted by one: position ``k`` of the logits predicts token ``k + 1``). The loss is
the sum of the tokens' negative log-likelihoods over all texts divided by the number of scored
tokens (a mean over tokens, not over documents), in nats per token. The summing is
:func:`peftcore.score.loglikelihood.token_loglikelihoods`, as for perplexity and choices, so
prompt tuning's virtual tokens and prefix tuning's prefixes are handled the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.device import resolve_precision
from peftcore.measure import stopwatch
from peftcore.score.batching import pad_token_id
from peftcore.score.loglikelihood import TokenRequest, token_loglikelihoods
from peftcore.score.run import _inference  # the inference context score() runs evaluators in
from peftcore.train.prompting import PromptFormat


@dataclass(frozen=True)
class TextLoss:
    """A model's mean next-token loss over some texts, and what it was computed over."""

    loss: float  # nats per scored token
    tokens: int  # tokens scored (each text's first token has no context and is not)
    documents: int
    seconds: float


def truncated_requests(fmt: PromptFormat, texts: Sequence[str], max_tokens: int) -> list[TokenRequest]:
    """One request per text: its first ``max_tokens`` tokens, scored from the second on.

    A text of a single token has nothing to score and is left out. ``ValueError`` for
    ``max_tokens < 2`` or when no text has two tokens.

    >>> class Chars:  # a tokenizer with one token per character
    ...     def __call__(self, text, add_special_tokens=True):
    ...         return {"input_ids": [ord(c) for c in text]}
    >>> requests = truncated_requests(PromptFormat(Chars(), chat=False), ["abcdef", "x", "ab"], 4)
    >>> [(len(r.tokens), r.start) for r in requests]
    [(4, 1), (2, 1)]
    """
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2 (a token and the one it predicts), got {max_tokens}")
    requests = []
    for text in texts:
        tokens = fmt.tokenizer(text, add_special_tokens=True)["input_ids"][:max_tokens]
        if len(tokens) >= 2:
            requests.append(TokenRequest(tuple(tokens), 1))
    if not requests:
        raise ValueError("no text has two tokens to score")
    return requests


def mean_token_loss(
    model: Any,
    fmt: PromptFormat,
    texts: Sequence[str],
    *,
    max_tokens: int,
    batch_size: int,
    device: str,
    precision: str,
) -> TextLoss:
    """The mean next-token cross-entropy of ``model`` over ``texts`` (see the module docstring).

    Runs like :func:`peftcore.score.score`: eval mode, no autograd, autocast to ``precision``
    (``fp32``: none), the model given back in the mode it had. ``ValueError`` as
    :func:`truncated_requests`, and for a loss that is not finite.
    """
    requests = truncated_requests(fmt, texts, max_tokens)
    with _inference(model, device, resolve_precision(precision, device)), stopwatch() as clock:
        totals, _ = token_loglikelihoods(
            model, requests, batch_size=batch_size, pad_id=pad_token_id(fmt), device=device
        )
    tokens = sum(len(r.tokens) - r.start for r in requests)
    loss = -math.fsum(totals) / tokens
    if not math.isfinite(loss):
        raise ValueError(f"the mean token loss over {len(requests)} texts is {loss}")
    return TextLoss(loss=loss, tokens=tokens, documents=len(requests), seconds=clock["seconds"])
