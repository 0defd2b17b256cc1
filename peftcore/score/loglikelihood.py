"""Log-likelihood of token continuations, batched: the core of choice scoring and perplexity.

A :class:`TokenRequest` asks for the summed log-probability of some tokens given the ones
before them; :func:`token_loglikelihoods` answers many at once in right-padded batches, as
lm-evaluation-harness scores ``loglikelihood`` requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftcore.score.batching import padding_fraction, right_padded
from peftcore.score.model_capabilities import accepts_logits_to_keep

if TYPE_CHECKING:
    import torch

# A log-likelihood batch holds at most this many tokens (or one row, if longer): the logits of
# a batch take tokens x vocabulary x 4 bytes, 0.8 GB for 4,096 tokens of a 49k vocabulary.
BATCH_TOKEN_BUDGET = 4096
# Log-softmax is taken over this many positions at a time (float32 copies stay small).
_LOGSOFTMAX_CHUNK = 512


@dataclass(frozen=True)
class TokenRequest:
    """Score ``tokens[start:]`` given ``tokens[:start]`` (``start >= 1``)."""

    tokens: tuple[int, ...]
    start: int


def token_loglikelihoods(
    model: Any, requests: Sequence[TokenRequest], *, batch_size: int, pad_id: int, device: str
) -> tuple[list[float], dict[str, Any]]:
    """Summed log-probability (natural log) of each request's scored tokens, batched.

    Requests are sorted longest first and right-padded (with an attention mask, padding after
    a row cannot change its logits); a batch holds at most ``batch_size`` rows and
    :data:`BATCH_TOKEN_BUDGET` tokens. As in lm-evaluation-harness the last token is not fed
    (nothing is predicted from it); the logits at positions ``start-1 .. len-2`` predict the
    scored tokens. Only the logits the batch needs are computed when the model accepts
    ``logits_to_keep``, and log-softmax is taken in float32. Virtual tokens of prompt tuning
    come before the input, so counting positions from the end of the output stays right.

    Returns the sums in the order of ``requests`` and figures about the batches
    (``padding_fraction``, ``forward_tokens``, ``padded_tokens``). ``ValueError`` for a
    request with nothing to score.
    """

    for request in requests:
        if not 1 <= request.start < len(request.tokens):
            raise ValueError(f"nothing to score: start {request.start} in {len(request.tokens)} tokens")
    keep_supported = accepts_logits_to_keep(model)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].tokens))
    totals = [0.0] * len(requests)
    real = padded = 0
    for batch in _token_batches(order, [len(r.tokens) - 1 for r in requests], batch_size):
        ids, mask = right_padded([requests[i].tokens[:-1] for i in batch], pad_id)
        width = ids.shape[1]
        real += int(mask.sum())
        padded += ids.numel()
        # Output position p of the kept logits is input position first + p.
        first = min(requests[i].start for i in batch) - 1 if keep_supported else 0
        extra = {"logits_to_keep": width - first} if keep_supported else {}
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **extra).logits
        logits = logits[:, -(width - first) :]
        for row, i in enumerate(batch):
            request = requests[i]
            lo = request.start - 1 - first
            totals[i] = sum_logprobs(
                logits[row, lo : lo + len(request.tokens) - request.start], request.tokens[request.start :]
            )
        del logits
    stats = {
        "padding_fraction": padding_fraction(real, padded),
        "forward_tokens": real,
        "padded_tokens": padded,
    }
    return totals, stats


def _token_batches(order: Sequence[int], lengths: Sequence[int], batch_size: int) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` (longest first) of at most ``batch_size`` rows and
    :data:`BATCH_TOKEN_BUDGET` padded tokens; a row longer than the budget goes alone."""
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]
        if batch and (len(batch) >= batch_size or (len(batch) + 1) * width > BATCH_TOKEN_BUDGET):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def sum_logprobs(logits: torch.Tensor, targets: Sequence[int]) -> float:
    """Sum of log-softmax(logits)[k, targets[k]], in float32, a chunk of positions at a time.

    ``logits`` has one row per target (the row that predicts it).
    """
    import torch

    index = torch.tensor(list(targets), dtype=torch.long, device=logits.device)[:, None]
    total = 0.0
    for at in range(0, len(targets), _LOGSOFTMAX_CHUNK):
        chunk = torch.log_softmax(logits[at : at + _LOGSOFTMAX_CHUNK].float(), dim=-1)
        total += float(chunk.gather(-1, index[at : at + _LOGSOFTMAX_CHUNK]).sum())
    return total
