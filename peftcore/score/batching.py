"""Token rows into batches: the pad token, right padding, and how much of a batch was padding.

torch is imported inside the functions that build tensors.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    import torch


def pad_token_id(fmt: PromptFormat) -> int:
    """The token batches are padded with: the tokenizer's pad token, else its EOS token.

    ``ValueError`` when the tokenizer has neither.
    """
    tok = fmt.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return int(pad)


def empty_context_token(fmt: PromptFormat) -> int:
    """The one token an empty context becomes: BOS, else the pad token (lm-evaluation-harness's
    prefix token), so that the first scored or generated token has something to follow."""
    tok = fmt.tokenizer
    return int(tok.bos_token_id) if tok.bos_token_id is not None else pad_token_id(fmt)


def batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    """Consecutive runs of ``order`` of at most ``size`` indices."""
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


def right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)`` of ``rows`` padded on the right to the longest (at least
    one column, so an all-empty batch still makes a tensor)."""
    import torch

    width = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[i, : len(row)] = 1
    return ids, mask


def padding_fraction(real_tokens: int, padded_tokens: int) -> float:
    """Share of the batched tokens that were padding, rounded to 4 places (0.0 for no batch)."""
    return round(1 - real_tokens / padded_tokens, 4) if padded_tokens else 0.0
