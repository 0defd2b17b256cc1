"""Batched greedy decoding with the KV cache: new token ids after each of many contexts.

Contexts are left-padded into batches of ``batch_size``; a prefix all contexts of a batch
share (a chat template's system turn, a few-shot preamble) runs once. Works for transformers
and peft models, prompt tuning included (its virtual tokens go after each row's padding).
transformers and torch are imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from peftcore.score.batching import batches, empty_context_token, pad_token_id, padding_fraction
from peftcore.score.model_capabilities import base_model, can_share_context, soft_prompt_tuner
from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    import torch

# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


def generation_contexts(fmt: PromptFormat, prompts: Sequence[str], room: int) -> list[list[int]]:
    """Context ids of each prompt, at most ``room`` tokens (the start goes), never empty."""
    contexts = []
    for prompt in prompts:
        context = fmt.encode_context(prompt)[-max(1, room) :]
        contexts.append(context or [empty_context_token(fmt)])
    return contexts


def generate_token_ids(
    model: Any,
    fmt: PromptFormat,
    contexts: Sequence[Sequence[int]],
    *,
    new_tokens: int,
    stop: Sequence[str],
    batch_size: int,
    device: str,
) -> tuple[list[list[int]], dict[str, Any]]:
    """Greedy new token ids after each context, ``batch_size`` contexts per ``generate`` call.

    Contexts are sorted longest first (similar lengths share a batch; memory peaks early) and
    left-padded. A row ends at EOS, at a stop string (transformers' ``StopStringCriteria``) or after
    ``new_tokens``; what generate appends after a row ended (padding, EOS) is dropped. The
    text of a row may still run past its stop string inside the last token: cut it with
    :func:`peftcore.score.generation.cut_at_stop`.

    Returns the ids in the order of ``contexts`` and figures about the decoding
    (``max_new_tokens``, ``generated_tokens``, ``prompt_padding_fraction``,
    ``shared_prefix_tokens``).
    """
    config = _generation_config(model, fmt, new_tokens)
    criteria = _stop_criteria(fmt, stop)
    ends = {pad_token_id(fmt), *_eos_ids(model, fmt)}
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    results: list[list[int]] = [[] for _ in contexts]
    real = padded = generated = prefix_tokens = 0
    for batch in batches(order, batch_size):
        rows, shared = _generate_batch(model, fmt, [contexts[i] for i in batch], config, criteria, device)
        prefix_tokens += shared
        width = max(len(contexts[i]) for i in batch)
        real += sum(len(contexts[i]) for i in batch)
        padded += width * len(batch)
        for i, new in zip(batch, rows, strict=True):
            cut = next((k for k, token in enumerate(new) if token in ends), len(new))
            results[i] = new[:cut]
            generated += cut
    stats = {
        "max_new_tokens": new_tokens,
        "generated_tokens": generated,
        "prompt_padding_fraction": padding_fraction(real, padded),
        "shared_prefix_tokens": prefix_tokens,
    }
    return results, stats


def _eos_ids(model: Any, fmt: PromptFormat) -> list[int]:
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if configured is None:
        configured = fmt.tokenizer.eos_token_id
    if configured is None:
        return []
    return [int(t) for t in configured] if isinstance(configured, (list, tuple)) else [int(configured)]


def _generation_config(model: Any, fmt: PromptFormat, new_tokens: int) -> Any:
    """Greedy decoding with the KV cache, every flag set explicitly (no sampling flags at all,
    so transformers has nothing to warn about whatever the model's own generation config says)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        max_new_tokens=new_tokens,
        do_sample=False,
        num_beams=1,
        use_cache=True,
        pad_token_id=pad_token_id(fmt),
        eos_token_id=_eos_ids(model, fmt) or None,
    )


def _stop_criteria(fmt: PromptFormat, stop: Sequence[str]) -> Any:
    """transformers' stop-string criterion, built once for all the batches of a call.

    ``generate(stop_strings=...)`` builds the same object on every call, and its cache of the
    vocabulary tables misses (the vocabulary comes back in a different order each time): about
    1.3 s per call with a 49k vocabulary, as much as decoding a whole short answer.
    """
    from transformers import StoppingCriteriaList, StopStringCriteria

    stops = [s for s in stop if s]
    return StoppingCriteriaList([StopStringCriteria(fmt.tokenizer, stops)] if stops else [])


def _generate_batch(
    model: Any, fmt: PromptFormat, contexts: Sequence[Sequence[int]], config: Any, criteria: Any, device: str
) -> tuple[list[list[int]], int]:
    """Greedy continuations of a batch of contexts: the new token ids of each row, and how many
    prefix tokens the rows shared.

    Rows are left-padded, except that a prefix every context shares (a chat template's system
    turn, a few-shot preamble) is run once and its KV cache copied to every row: the padding
    then goes between the shared prefix and the rest of the row. Position ids come from the
    attention mask (generate counts real tokens), so every row sees the positions it has alone.
    """
    import torch

    pad = pad_token_id(fmt)
    shared = _shared_prefix(contexts) if len(contexts) > 1 and can_share_context(model) else 0
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for row, tokens in enumerate(contexts):
        rest = width - len(tokens) + shared  # where the unshared tokens start
        ids[row, :shared] = torch.tensor(list(tokens[:shared]), dtype=torch.long)
        ids[row, rest:] = torch.tensor(list(tokens[shared:]), dtype=torch.long)
        mask[row, :shared] = 1
        mask[row, rest:] = 1
    ids, mask = ids.to(device), mask.to(device)
    if soft_prompt_tuner(model):
        embeds, mask = _with_soft_prompt(model, ids, mask)
        out = base_model(model).generate(
            inputs_embeds=embeds, attention_mask=mask, generation_config=config, stopping_criteria=criteria
        )
        new = out  # decoder-only generate from embeddings alone returns only the new tokens
    else:
        extra = {}
        if shared:
            prefix = model(input_ids=ids[:1, :shared], use_cache=True, logits_to_keep=1)
            cache = prefix.past_key_values
            cache.batch_repeat_interleave(len(contexts))
            extra["past_key_values"] = cache
        out = model.generate(
            input_ids=ids, attention_mask=mask, generation_config=config, stopping_criteria=criteria, **extra
        )
        new = out[:, width:]
    return [row.tolist() for row in new], shared


def _shared_prefix(contexts: Sequence[Sequence[int]]) -> int:
    """Length of the prefix all contexts share, leaving every row at least one token of its own
    (generate needs a token to feed); 0 when shorter than :data:`MIN_SHARED_PREFIX`."""
    limit = min(len(c) for c in contexts) - 1
    first = contexts[0]
    length = 0
    while length < limit and all(c[length] == first[length] for c in contexts):
        length += 1
    return length if length >= MIN_SHARED_PREFIX else 0


def _with_soft_prompt(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input embeddings with the soft prompt placed after each row's left padding.

    peft's own ``generate`` puts the virtual tokens before the padding and ignores the
    position ids generate computes from the mask (with a warning), so a padded row would see
    its prompt at other positions than when generated alone. Placing the virtual tokens right
    before the real tokens gives every row the positions it has unpadded (and in training).
    """
    import torch

    embeds = model.word_embeddings(ids)
    prompts = model.get_prompt(batch_size=ids.shape[0]).to(embeds.dtype)
    ones = torch.ones(prompts.shape[:2], dtype=mask.dtype, device=mask.device)
    rows, masks = [], []
    for row in range(ids.shape[0]):
        pads = int((mask[row] == 0).sum())
        rows.append(torch.cat([embeds[row, :pads], prompts[row], embeds[row, pads:]]))
        masks.append(torch.cat([mask[row, :pads], ones[row], mask[row, pads:]]))
    return torch.stack(rows), torch.stack(masks)
