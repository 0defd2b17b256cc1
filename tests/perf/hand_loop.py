"""The careful practitioner's training loop: the ceiling of tests/perf/test_training_throughput.py.

Written by hand because it is the reference the library stacks (TRL's ``SFTTrainer``, peftcore's
Trainer) are measured against, and no library ships "a training loop with nothing in it". It
does only what the loss needs, in plain torch, the way someone who knows the model would write
it for one run:

- length-grouped batches: the examples sorted by length and cut into batches of ``batch_size``,
  the batches' order shuffled with the budget's seed (a new order each pass over the data), each
  batch right-padded only to its own longest row;
- answer-only loss with the LM head only where it counts: the decoder's hidden states from the
  backbone (peft injects its adapters into the backbone's layers, so they stay active), the
  positions whose next token is labeled picked out, the LM head and cross-entropy run only there:
  the mean over the labeled tokens, as transformers' own loss;
- ``torch.optim.AdamW`` with the budget's learning rate and weight decay, transformers' schedule
  of the budget's name and warm-up (``get_scheduler``, a plain ``LambdaLR``), gradients clipped
  to the budget's norm, as the Trainer does;
- ``fp32`` (no autocast) or ``bf16`` autocast around the forward and the loss.

No Trainer, no accelerate, no data loader, no gradient accumulation, one process. Not for
prompt-learning tuners (their virtual tokens move every position) nor models whose causal-LM
forward does more than the LM head (Gemma 2's soft-capped logits): :func:`decoder_and_head`
refuses both. Checked in the quick tier by tests/test_hand_loop.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from peftcore.spec import TrainingBudget
from peftcore.train.trainer import warmup_steps

IGNORE_INDEX = -100  # labels the loss skips (prompt tokens, padding)
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class HandRun:
    """What one run of :func:`train` measured."""

    seconds: float  # the training loop's wall time, batching included
    tokens: int  # real (non-padding) tokens trained on
    curve: list[float]  # the loss of each step


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, generator: torch.Generator
) -> list[list[int]]:
    """Indices of the examples sorted by length, cut into batches of ``batch_size`` (the last one
    may be shorter), the batches in an order drawn from ``generator``.

    >>> g = torch.Generator().manual_seed(0)
    >>> sorted(length_grouped_batches([5, 1, 4, 2, 3], 2, g))  # lengths 1 2 | 3 4 | 5
    [[0], [1, 3], [4, 2]]
    """
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def pad(rows: Sequence[Mapping[str, Sequence[int]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``labels`` of ``rows``, right-padded to the longest row.

    Padded with id 0 and label -100: with right padding a causal model's real positions never
    attend to the padding after them, and no loss is taken there, so the pad id does not matter
    and no attention mask is needed (which lets SDPA take its causal path, with no mask built).
    """
    longest = max(len(row["input_ids"]) for row in rows)
    input_ids = torch.zeros((len(rows), longest), dtype=torch.long)
    labels = torch.full((len(rows), longest), IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(rows):
        length = len(row["input_ids"])
        input_ids[i, :length] = torch.tensor(row["input_ids"])
        labels[i, :length] = torch.tensor(row["labels"])
    return input_ids, labels


def decoder_and_head(model: Any) -> tuple[Any, Any]:
    """The backbone (a peft model's adapters inside it) and the LM head of a causal LM or a peft
    model of one. Raises ValueError when the loss cannot be computed from those two alone."""
    config = getattr(model, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        raise ValueError(f"{config.peft_type.value.lower()} adds virtual tokens before the input")
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base.config, "final_logit_softcapping", None) or getattr(base.config, "logit_scale", None):
        raise ValueError(f"{type(base).__name__} scales its logits after the LM head")
    return base.get_decoder(), base.get_output_embeddings()


def answer_loss(decoder: Any, head: Any, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The mean cross-entropy of the labeled next tokens, the LM head run at their positions only."""
    hidden = decoder(input_ids=input_ids, use_cache=False).last_hidden_state
    targets = labels[:, 1:]  # position t predicts token t + 1
    labeled = targets != IGNORE_INDEX
    logits = head(hidden[:, :-1][labeled])
    return F.cross_entropy(logits.float(), targets[labeled])


def train(
    model: Any,
    rows: Sequence[Mapping[str, Sequence[int]]],
    budget: TrainingBudget,
    *,
    precision: str,
    device: str,
) -> HandRun:
    """Train ``model`` (on ``device``, made trainable: e.g. peft's ``get_peft_model``) for
    ``budget.max_steps`` steps of ``budget.batch_size`` rows of ``rows`` (each with ``input_ids``
    and ``labels``, -100 where no loss is taken, as ``prompting.tokenized_train_set`` writes them).

    Raises ValueError for a precision not in PRECISIONS, gradient accumulation, or a model
    :func:`decoder_and_head` refuses.
    """
    from transformers import get_scheduler

    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}: the hand loop trains in {', '.join(PRECISIONS)}")
    if budget.gradient_accumulation_steps != 1:
        raise ValueError("the hand loop takes one batch per optimizer step (gradient_accumulation_steps: 1)")
    decoder, head = decoder_and_head(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=budget.learning_rate, weight_decay=budget.weight_decay)
    schedule = get_scheduler(
        budget.lr_scheduler,
        optimizer,
        num_warmup_steps=warmup_steps(budget),
        num_training_steps=budget.max_steps,
    )
    generator = torch.Generator().manual_seed(budget.seed)
    lengths = [len(row["input_ids"]) for row in rows]
    batches: Iterator[list[int]] = iter(())
    device_type = torch.device(device).type
    curve: list[float] = []
    tokens = 0
    model.train()
    start = time.perf_counter()
    for _ in range(budget.max_steps):
        batch = next(batches, None)
        if batch is None:  # a new pass over the data, in a new order
            batches = iter(length_grouped_batches(lengths, budget.batch_size, generator))
            batch = next(batches)
        input_ids, labels = (t.to(device) for t in pad([rows[i] for i in batch]))
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = answer_loss(decoder, head, input_ids, labels)
        loss.backward()
        if budget.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, budget.max_grad_norm)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        curve.append(loss.item())
        tokens += sum(lengths[i] for i in batch)
    return HandRun(time.perf_counter() - start, tokens, curve)
