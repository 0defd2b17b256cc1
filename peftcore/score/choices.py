"""The evaluator of ``multiple_choice`` and ``classification`` tasks: log-likelihood of every
choice given the context, as lm-evaluation-harness scores ``multiple_choice`` tasks.

``accuracy`` takes the choice with the highest summed log-probability, ``accuracy_norm`` the
highest log-probability per UTF-8 byte of the choice text. Each prediction holds ``choice``,
``choice_norm``, ``label`` and the rounded ``loglikelihoods`` of the choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.data.example import Example
from peftcore.score.batching import batches, empty_context_token, pad_token_id, padding_fraction, right_padded
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
from peftcore.score.loglikelihood import TokenRequest, sum_logprobs, token_loglikelihoods
from peftcore.score.metrics import resolve_metric
from peftcore.score.model_capabilities import can_share_context
from peftcore.train.prompting import PromptFormat
from peftcore.vocab.metrics import EVALUATOR_METRICS, TASK_INPUTS

# What the choice evaluator reports whatever the task lists.
CHOICE_METRICS = EVALUATOR_METRICS["multiple_choice"]
# Metrics of a choice task take the chosen indices, or every choice's log-likelihood (Brier score).
CHOICE_INPUTS = TASK_INPUTS["multiple_choice"]


@dataclass(frozen=True)
class ChoiceGroup:
    """One example's context tokens and the continuations to score after it."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def choice_group(fmt: PromptFormat, example: Example, max_length: int) -> ChoiceGroup:
    """Token ids of an example's context and choices, as training tokenizes prompt and target.

    The context is ``fmt.encode_context(prompt)`` and each choice ``fmt.encode_continuation``:
    for our templates (context ending in a non-space, choice starting with one) that is the
    split lm-evaluation-harness gets by encoding context + continuation and cutting at the
    context's length. An empty context becomes the BOS token (lm-eval's prefix token; the pad
    token when there is no BOS). A context too long for ``max_length`` loses its start.

    ``ValueError`` for an example without choices, a choice that encodes to no tokens, or a
    choice longer than ``max_length``.
    """
    if not example.choices:
        raise ValueError(f"example {example.uid} has no choices to score")
    context = fmt.encode_context(example.prompt) or [empty_context_token(fmt)]
    continuations = []
    for choice in example.choices:
        tokens = fmt.encode_continuation(choice)
        if not tokens:
            raise ValueError(f"example {example.uid}: choice {choice!r} encodes to no tokens")
        if len(tokens) > max_length:
            raise ValueError(
                f"example {example.uid}: a choice of {len(tokens)} tokens is longer than "
                f"the {max_length} tokens the model can see"
            )
        continuations.append(tuple(tokens))
    # Every input is context + continuation minus its last token, at most max_length tokens.
    room = max_length + 1 - max(len(c) for c in continuations)
    return ChoiceGroup(tuple(context[-room:]), tuple(continuations))


def choice_loglikelihoods(
    model: Any,
    groups: Sequence[ChoiceGroup],
    *,
    batch_size: int,
    pad_id: int,
    device: str,
    share_context: bool | None = None,
) -> tuple[list[list[float]], dict[str, Any]]:
    """Summed log-probability of every continuation of every group, batched.

    With ``share_context`` (default: when :func:`can_share_context`), a batch of contexts runs
    once and each continuation runs on a copy of its context's KV cache, with explicit
    position ids; otherwise every (context, continuation) pair is a row of its own. Both give
    the same numbers (up to float rounding); sharing does the context's work once per group
    instead of once per choice.
    """
    share = can_share_context(model) if share_context is None else share_context
    results: list[list[float]] = [[] for _ in groups]
    shared = [g for g, group in enumerate(groups) if share and len(group.context) >= 2]
    flat = sorted(set(range(len(groups))) - set(shared))
    stats: dict[str, Any] = {"shared_context": bool(shared)}
    real = padded = 0
    if shared:
        values, real, padded = _shared_context(model, [groups[g] for g in shared], batch_size, pad_id, device)
        for g, lls in zip(shared, values, strict=True):
            results[g] = lls
    if flat:
        requests = [
            TokenRequest(groups[g].context + cont, len(groups[g].context))
            for g in flat
            for cont in groups[g].continuations
        ]
        totals, flat_stats = token_loglikelihoods(
            model, requests, batch_size=batch_size, pad_id=pad_id, device=device
        )
        at = 0
        for g in flat:
            n = len(groups[g].continuations)
            results[g] = totals[at : at + n]
            at += n
        real += flat_stats["forward_tokens"]
        padded += flat_stats["padded_tokens"]
    stats.update(
        forward_tokens=real,
        padding_fraction=padding_fraction(real, padded),
        requests=sum(len(g.continuations) for g in groups),
    )
    return results, stats


def _shared_context(
    model: Any, groups: Sequence[ChoiceGroup], batch_size: int, pad_id: int, device: str
) -> tuple[list[list[float]], int, int]:
    """Log-likelihoods with each context run once (see :func:`choice_loglikelihoods`).

    Pass 1 runs ``context[:-1]`` of a batch of groups (right-padded, so no row is all padding:
    every context has at least two tokens). Its cache is copied to one row per continuation;
    pass 2 runs ``context[-1:] + continuation[:-1]`` at positions after the row's context,
    masked so that it sees its own context and nothing of the padding in between.
    """
    import torch

    results: list[list[float]] = [[] for _ in groups]
    order = sorted(range(len(groups)), key=lambda g: -len(groups[g].context))
    real = padded = 0
    for batch in batches(order, batch_size):
        prefixes = [groups[g].context[:-1] for g in batch]
        ids, mask = right_padded(prefixes, pad_id)
        out = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, logits_to_keep=1
        )
        cache = out.past_key_values
        rows = [(b, c) for b, g in enumerate(batch) for c in range(len(groups[g].continuations))]
        owner = torch.tensor([b for b, _ in rows], dtype=torch.long)
        cache.reorder_cache(owner.to(device))
        inputs = [groups[batch[b]].context[-1:] + groups[batch[b]].continuations[c][:-1] for b, c in rows]
        cont_ids, cont_mask = right_padded(inputs, pad_id)
        width = cont_ids.shape[1]
        starts = torch.tensor([len(prefixes[b]) for b, _ in rows], dtype=torch.long)
        positions = starts[:, None] + torch.arange(width, dtype=torch.long)[None, :]
        logits = model(
            input_ids=cont_ids.to(device),
            attention_mask=torch.cat([mask[owner], cont_mask], dim=1).to(device),
            position_ids=positions.to(device),
            past_key_values=cache,
            use_cache=True,
        ).logits
        for row, (b, c) in enumerate(rows):
            targets = groups[batch[b]].continuations[c]
            results[batch[b]].append(sum_logprobs(logits[row, : len(targets)], targets))
        real += sum(len(p) for p in prefixes) + sum(len(i) for i in inputs)
        padded += ids.numel() + cont_ids.numel()
        del out, cache, logits
    return results, real, padded


def choice_length(fmt: PromptFormat, choice: str, unit: str = "characters") -> int:
    """Length of a choice for length-normalized accuracy, as lm-evaluation-harness measures it.

    The harness divides a choice's log-likelihood by the length of the choice string without
    its ``target_delimiter`` (the leading space): in characters for ``acc_norm``, in UTF-8
    bytes for ``acc_bytes``. Our choices are rendered with the delimiter, so it is stripped.

    >>> from types import SimpleNamespace
    >>> plain = SimpleNamespace(continuation=lambda text: text)
    >>> choice_length(plain, " café"), choice_length(plain, " café", "bytes")
    (4, 5)
    """
    text = fmt.continuation(choice).lstrip()
    return max(1, len(text.encode("utf-8")) if unit == "bytes" else len(text))


def _infer_choices(run: ScoringRun, examples: Sequence[Example]) -> RawOutputs:
    for example in examples:
        if not example.choices:
            raise ValueError(f"example {example.uid} of task {run.task.name!r} has no choices to score")
        if example.label is None or not 0 <= example.label < len(example.choices):
            raise ValueError(
                f"example {example.uid} of task {run.task.name!r} has no valid gold label "
                f"({example.label!r} for {len(example.choices)} choices)"
            )
    groups = [choice_group(run.fmt, example, run.max_length) for example in examples]
    values, stats = choice_loglikelihoods(
        run.model, groups, batch_size=run.settings.batch_size, pad_id=pad_token_id(run.fmt), device=run.device
    )
    return RawOutputs(values, stats)


def _argmax(values: Sequence[float]) -> int:
    """The first index of the largest value: ties go to the earlier choice, as numpy's argmax
    (and so lm-evaluation-harness) breaks them."""
    return max(range(len(values)), key=lambda i: values[i])


def _tied(values: Sequence[float]) -> bool:
    """Whether the largest value is shared (the argmax then is a tie-break, not a prediction)."""
    best = max(values)
    return sum(v == best for v in values) > 1


def _finish_choices(
    run: ScoringRun, examples: Sequence[Example], raw: RawOutputs
) -> tuple[Metrics, Predictions, ExampleScores]:
    chosen, chosen_norm, chosen_bytes, gold, predictions = [], [], [], [], []
    ties = ties_norm = 0
    for example, lls in zip(examples, raw.values, strict=True):
        assert example.label is not None  # checked before inference
        per_char = [ll / choice_length(run.fmt, c) for ll, c in zip(lls, example.choices, strict=True)]
        per_byte = [
            ll / choice_length(run.fmt, c, "bytes") for ll, c in zip(lls, example.choices, strict=True)
        ]
        chosen.append(_argmax(lls))
        chosen_norm.append(_argmax(per_char))
        chosen_bytes.append(_argmax(per_byte))
        ties += _tied(lls)
        ties_norm += _tied(per_char)
        gold.append(example.label)
        predictions.append(
            {
                "uid": example.uid,
                "choice": chosen[-1],
                "choice_norm": chosen_norm[-1],
                "label": example.label,
                "loglikelihoods": [round(v, 5) for v in lls],
            }
        )
    by_metric = {"accuracy_norm": chosen_norm, "accuracy_bytes": chosen_bytes}

    def inputs(name: str) -> tuple[Any, ...]:
        takes_lls = resolve_metric(name).inputs == "choice_loglikelihoods"
        return (raw.values if takes_lls else by_metric.get(name, chosen), gold)

    names = metric_names(run.task, CHOICE_INPUTS, CHOICE_METRICS)
    metrics, kept = evaluate_metrics(names, inputs, examples)
    if "macro_f1" in metrics:  # corpus-level: recomputed from the labels on a resample
        kept.corpus["macro_f1"] = {"predicted": chosen, "gold": gold}
    # Exact ties in the top score: the prediction there is the tie-break's, not the model's.
    raw.stats.update(tied_predictions=ties, tied_predictions_norm=ties_norm)
    return metrics, predictions, kept


CHOICES = Evaluator(CHOICE_INPUTS, CHOICE_METRICS, _infer_choices, _finish_choices)
