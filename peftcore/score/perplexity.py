"""The evaluator of ``language_modeling`` tasks: perplexity of ``Example.target`` with a sliding
window (stride half the window; only tokens no earlier window scored count), summed over all
examples. Each prediction holds the example's ``nll`` and its number of scored ``tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from peftcore.data.example import Example
from peftcore.score.batching import pad_token_id
from peftcore.score.evaluator import (
    Evaluator,
    ExampleScores,
    Metrics,
    Predictions,
    RawOutputs,
    ScoringRun,
    metric_names,
)
from peftcore.score.loglikelihood import TokenRequest, token_loglikelihoods
from peftcore.score.metrics import resolve_metric
from peftcore.vocab.metrics import EVALUATOR_METRICS


def sliding_windows(tokens: Sequence[int], window: int, stride: int) -> list[TokenRequest]:
    """Windows over ``tokens`` as in the transformers perplexity guide.

    Each window holds up to ``window`` tokens and starts ``stride`` after the previous one;
    it scores only the tokens no earlier window scored (the first token of the text has no
    context and is never scored). Every other token is scored exactly once. ``ValueError``
    for ``window < 2`` or ``stride < 1``.

    >>> [(len(w.tokens), w.start) for w in sliding_windows(range(10), 4, 2)]
    [(4, 1), (4, 2), (4, 2), (4, 2)]
    """
    if window < 2 or stride < 1:
        raise ValueError(f"need window >= 2 and stride >= 1, got {window} and {stride}")
    tokens = list(tokens)
    windows = []
    previous_end = 0
    for begin in range(0, len(tokens), stride):
        end = min(begin + window, len(tokens))
        new = end - previous_end
        chunk = tokens[begin:end]
        if len(chunk) >= 2:
            windows.append(TokenRequest(tuple(chunk), max(1, len(chunk) - new)))
        previous_end = end
        if end == len(tokens):
            break
    return windows


def _infer_perplexity(run: ScoringRun, examples: Sequence[Example]) -> RawOutputs:
    window = max(2, run.max_length)
    stride = max(1, window // 2)
    requests: list[TokenRequest] = []
    spans = []
    counts = []
    for example in examples:
        # The same ids training uses for a language-modelling example (special tokens included).
        tokens = run.fmt.tokenizer(example.target, add_special_tokens=True)["input_ids"]
        mine = sliding_windows(tokens, window, stride)
        spans.append((len(requests), len(requests) + len(mine)))
        counts.append(sum(len(w.tokens) - w.start for w in mine))
        requests.extend(mine)
    if not requests:
        raise ValueError(f"task {run.task.name!r}: no example has two tokens to score")
    totals, stats = token_loglikelihoods(
        run.model,
        requests,
        batch_size=run.settings.batch_size,
        pad_id=pad_token_id(run.fmt),
        device=run.device,
    )
    stats.update(window=window, stride=stride, windows=len(requests))
    return RawOutputs([(-sum(totals[a:b]), n) for (a, b), n in zip(spans, counts, strict=True)], stats)


def _finish_perplexity(
    run: ScoringRun, examples: Sequence[Example], raw: RawOutputs
) -> tuple[Metrics, Predictions, ExampleScores]:
    total_nll = math.fsum(nll for nll, _ in raw.values)
    total_tokens = sum(n for _, n in raw.values)
    metrics = {
        name: float(resolve_metric(name)(total_nll, total_tokens))
        for name in metric_names(run.task, ("nll",), ("perplexity",))
    }
    predictions = [
        {"uid": e.uid, "nll": round(nll, 4), "tokens": n}
        for e, (nll, n) in zip(examples, raw.values, strict=True)
    ]
    # Perplexity is corpus-level (total NLL over total tokens): kept as each document's NLL and
    # token count, with the mean loss per token of each document as its per-example score.
    kept = ExampleScores(
        [e.uid for e in examples],
        scores={"document_loss": [nll / max(n, 1) for nll, n in raw.values]},
        corpus={"perplexity": {"nll": [nll for nll, _ in raw.values], "tokens": [n for _, n in raw.values]}},
    )
    return metrics, predictions, kept


PERPLEXITY = Evaluator(
    ("nll",), EVALUATOR_METRICS["language_modeling"], _infer_perplexity, _finish_perplexity
)
