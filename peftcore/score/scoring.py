"""Scoring a model on a task's examples: one batched evaluator per task type.

``score(model, fmt, examples, task, settings, device=..., precision=...)`` picks the evaluator
by ``task.type`` and returns a :class:`ScoreResult` (metrics, per-example predictions, and the
cost of inference: latency, throughput, peak memory).

- ``multiple_choice`` / ``classification``: log-likelihood of every choice given the context,
  as lm-evaluation-harness scores ``multiple_choice`` tasks. ``accuracy`` takes the choice
  with the highest summed log-probability, ``accuracy_norm`` the highest log-probability per
  UTF-8 byte of the choice text.
- ``generation``: batched greedy decoding with the KV cache and left padding, cut at the
  task's stop strings, reduced by ``generation.extract`` (``none``, ``first_line``,
  ``number``), compared with ``Example.answers``.
- ``language_modeling``: perplexity of ``Example.target`` with a sliding window (stride half
  the window; only tokens no earlier window scored count), summed over all examples.

Token ids come from :class:`peftcore.train.prompting.PromptFormat`, so scoring sees exactly the
context and answer tokens training used. The model may be a transformers model or a peft
model (LoRA and friends, prompt tuning and prefix tuning, whose virtual tokens are
accounted for), full precision or bitsandbytes-quantized.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from peftcore.data.example import Example
from peftcore.device import resolve_precision
from peftcore.measure import PeakMemory, stopwatch
from peftcore.score.metrics import extract_number, resolve_metric
from peftcore.spec import EvalSettings, TaskSpec
from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    import torch

# When neither the model config nor the caller says how long an input may be.
FALLBACK_MAX_LENGTH = 2048
# A log-likelihood batch holds at most this many tokens (or one row, if longer): the logits of
# a batch take tokens x vocabulary x 4 bytes, 0.8 GB for 4,096 tokens of a 49k vocabulary.
BATCH_TOKEN_BUDGET = 4096
# Log-softmax is taken over this many positions at a time (float32 copies stay small).
_LOGSOFTMAX_CHUNK = 512
# Prompt-learning tuners whose virtual tokens are input embeddings (not a KV-cache prefix).
_EMBEDDING_PROMPT_TUNERS = ("PROMPT_TUNING", "P_TUNING")


@dataclass(frozen=True)
class ScoreResult:
    """What scoring one split gives, JSON-ready (floats, ints, strings, lists, dicts).

    - ``metrics``: metric name -> value, the task spec's metrics plus what the evaluator adds
      (``accuracy_norm`` for choices, ``number_unparseable_rate`` next to ``abs_diff``).
    - ``predictions``: one dict per example, in the order of the examples given, with ``uid``
      and ``choice``/``choice_norm``/``loglikelihoods`` (choices), ``generated``/``answer``
      (generation) or ``nll``/``tokens`` (language modelling).
    - ``inference``: ``examples``, ``seconds``, ``latency_ms_per_example``,
      ``examples_per_second``, ``peak_memory_bytes``, ``memory_method`` and details
      (``batch_size``, ``precision``, ``padding_fraction``, ...), measured over the model's
      work only (metric computation such as BERTScore is not inference).
    """

    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    inference: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(
    model: Any,
    fmt: PromptFormat,
    examples: Sequence[Example],
    task: TaskSpec,
    settings: EvalSettings,
    *,
    device: str,
    precision: str,
    max_length: int | None = None,
) -> ScoreResult:
    """Score ``model`` on ``examples`` of ``task`` and measure what inference costs.

    ``precision`` is ``bf16`` (autocast to bfloat16; log-softmax still in float32), ``fp16``
    (autocast to float16), ``fp32`` (no autocast) or ``auto`` (bf16 where the device computes
    it fast, else fp32). ``max_length`` caps the
    tokens one forward pass sees (default: ``settings.max_length`` if the settings have one,
    else the model's ``max_position_embeddings`` minus any virtual tokens); it is also the
    perplexity window (stride: half of it). Longer inputs lose the start of their
    context. The model is put in eval mode for the call and given back in the mode it had.

    Raises ``ValueError`` for no examples, an unknown task type, a metric whose inputs the
    task type cannot give, or an example that cannot be scored (no choices, an empty choice).
    """
    if not examples:
        raise ValueError(f"no examples to score for task {task.name!r}")
    evaluator = EVALUATORS.get(task.type)
    if evaluator is None:
        raise ValueError(f"no evaluator for task type {task.type!r}; known: {', '.join(sorted(EVALUATORS))}")
    metric_names(
        task, evaluator.gives, evaluator.extra
    )  # a metric the evaluator cannot feed fails before any work
    precision = resolve_precision(precision, device)
    limit = max_length or getattr(settings, "max_length", None) or max_input_length(model)
    run = _Run(model=model, fmt=fmt, task=task, settings=settings, device=device, max_length=limit)
    memory = PeakMemory(device)
    with _inference(model, device, precision), memory, stopwatch() as clock:
        raw = evaluator.infer(run, examples)
    metrics, predictions = evaluator.finish(run, examples, raw)
    seconds = clock["seconds"]
    n = len(examples)
    inference: dict[str, Any] = {
        "examples": n,
        "seconds": round(seconds, 4),
        "latency_ms_per_example": round(1000.0 * seconds / n, 3),
        "examples_per_second": round(n / max(seconds, 1e-9), 3),
        "peak_memory_bytes": int(memory.peak_bytes),
        "memory_method": memory.method,
        "precision": precision,
        "batch_size": settings.batch_size,
        **raw.stats,
    }
    return ScoreResult(metrics=metrics, predictions=predictions, inference=inference)


# --------------------------------------------------------------------------- shared plumbing


@dataclass(frozen=True)
class _Run:
    model: Any
    fmt: PromptFormat
    task: TaskSpec
    settings: EvalSettings
    device: str
    max_length: int


@dataclass
class _Raw:
    """What an evaluator's inference phase hands to its metric phase."""

    values: list[Any]
    stats: dict[str, Any]


@dataclass(frozen=True)
class _Evaluator:
    gives: str  # what its metrics take (peftcore.score.metrics.Metric.inputs)
    extra: tuple[str, ...]  # metrics it reports besides the task's
    infer: Callable[[_Run, Sequence[Example]], _Raw]
    finish: Callable[[_Run, Sequence[Example], _Raw], tuple[dict[str, float], list[dict[str, Any]]]]


def metric_names(task: TaskSpec, gives: str, extra: Sequence[str] = ()) -> list[str]:
    """The metrics to compute: ``extra`` then the task's, minus judged ones (peftcore.score.judge
    scores those from the predictions). ``ValueError`` for a metric taking other inputs."""
    names = []
    for name in dict.fromkeys([*extra, *task.metrics]):
        metric = resolve_metric(name)
        if metric.inputs == "judge":
            continue
        if metric.inputs != gives:
            raise ValueError(
                f"task {task.name!r} ({task.type}) gives {gives}, but metric {name!r} takes {metric.inputs}"
            )
        names.append(name)
    return names


@contextlib.contextmanager
def _inference(model: Any, device: str, precision: str) -> Iterator[None]:
    import torch

    was_training = bool(getattr(model, "training", False))
    model.eval()
    autocast: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        autocast = torch.autocast(device_type=torch.device(device).type, dtype=dtype)
    elif precision not in ("fp32",):
        raise ValueError(f"precision must be bf16, fp16 or fp32, got {precision!r}")
    try:
        with torch.inference_mode(), autocast:
            yield
    finally:
        if was_training:
            model.train()


def _peft_config(model: Any) -> Any:
    """The active peft config of a PeftModel, else None."""
    return getattr(model, "active_peft_config", None) if hasattr(model, "peft_config") else None


def _soft_prompt_tuner(model: Any) -> bool:
    """True for prompt tuning / p-tuning, whose virtual tokens are input embeddings."""
    config = _peft_config(model)
    return config is not None and str(getattr(config.peft_type, "value", "")) in _EMBEDDING_PROMPT_TUNERS


def virtual_tokens(model: Any) -> int:
    """How many positions a prompt-learning adapter adds in front of the input (0 otherwise)."""
    config = _peft_config(model)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    return int(config.num_virtual_tokens)


def max_input_length(model: Any) -> int:
    """Tokens a forward pass may hold: the model's positions minus any virtual tokens."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config: Any = getattr(base, "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text_config, "max_position_embeddings", None) or FALLBACK_MAX_LENGTH
    return max(1, int(positions) - virtual_tokens(model))


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def _pad_id(fmt: PromptFormat) -> int:
    tok = fmt.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an EOS token to pad batches with")
    return int(pad)


def _batches(order: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(order), size):
        yield list(order[start : start + size])


# --------------------------------------------------------------------------- log-likelihood core


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
    """

    for request in requests:
        if not 1 <= request.start < len(request.tokens):
            raise ValueError(f"nothing to score: start {request.start} in {len(request.tokens)} tokens")
    keep_supported = _accepts_logits_to_keep(model)
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].tokens))
    totals = [0.0] * len(requests)
    real = padded = 0
    for batch in _token_batches(order, [len(r.tokens) - 1 for r in requests], batch_size):
        ids, mask = _right_padded([requests[i].tokens[:-1] for i in batch], pad_id)
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
            totals[i] = _sum_logprobs(
                logits[row, lo : lo + len(request.tokens) - request.start], request.tokens[request.start :]
            )
        del logits
    stats = {
        "padding_fraction": round(1 - real / padded, 4) if padded else 0.0,
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


def _sum_logprobs(logits: torch.Tensor, targets: Sequence[int]) -> float:
    """Sum of log-softmax(logits)[k, targets[k]], in float32, a chunk of positions at a time."""
    import torch

    index = torch.tensor(list(targets), dtype=torch.long, device=logits.device)[:, None]
    total = 0.0
    for at in range(0, len(targets), _LOGSOFTMAX_CHUNK):
        chunk = torch.log_softmax(logits[at : at + _LOGSOFTMAX_CHUNK].float(), dim=-1)
        total += float(chunk.gather(-1, index[at : at + _LOGSOFTMAX_CHUNK]).sum())
    return total


# --------------------------------------------------------------------------- choices


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
    context's length. An empty context becomes the BOS (else EOS) token, lm-eval's prefix
    token. A context too long for ``max_length`` loses its start.
    """
    if not example.choices:
        raise ValueError(f"example {example.uid} has no choices to score")
    context = fmt.encode_context(example.prompt)
    if not context:
        tok = fmt.tokenizer
        context = [tok.bos_token_id if tok.bos_token_id is not None else _pad_id(fmt)]
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


def can_share_context(model: Any) -> bool:
    """Whether the context of a group can be run once and its KV cache reused for each choice.

    Not for prompt-learning adapters: peft injects their virtual tokens (or prefix cache) on
    every forward call, so a second call on top of a cache would inject them twice.
    """
    if virtual_tokens(model) or not _accepts_logits_to_keep(model):
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        parameters = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False
    return "position_ids" in parameters and "past_key_values" in parameters


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
        padding_fraction=round(1 - real / padded, 4) if padded else 0.0,
        requests=sum(len(g.continuations) for g in groups),
    )
    return results, stats


def _right_padded(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(1, max(len(row) for row in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
            mask[i, : len(row)] = 1
    return ids, mask


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
    for batch in _batches(order, batch_size):
        prefixes = [groups[g].context[:-1] for g in batch]
        ids, mask = _right_padded(prefixes, pad_id)
        out = model(
            input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, logits_to_keep=1
        )
        cache = out.past_key_values
        rows = [(b, c) for b, g in enumerate(batch) for c in range(len(groups[g].continuations))]
        owner = torch.tensor([b for b, _ in rows], dtype=torch.long)
        cache.reorder_cache(owner.to(device))
        inputs = [groups[batch[b]].context[-1:] + groups[batch[b]].continuations[c][:-1] for b, c in rows]
        cont_ids, cont_mask = _right_padded(inputs, pad_id)
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
            results[batch[b]].append(_sum_logprobs(logits[row, : len(targets)], targets))
        real += sum(len(p) for p in prefixes) + sum(len(i) for i in inputs)
        padded += ids.numel() + cont_ids.numel()
        del out, cache, logits
    return results, real, padded


def choice_bytes(fmt: PromptFormat, choice: str) -> int:
    """Length of a choice for ``accuracy_norm``: UTF-8 bytes of the scored continuation
    without the whitespace that separates it from the context.

    lm-evaluation-harness divides by the length of the choice string without its
    ``target_delimiter`` (the leading space); our choices are rendered with it, so it is
    stripped here. For ASCII text bytes equal characters, so this equals lm-eval's
    ``acc_norm`` (characters) and ``acc_bytes`` (bytes).
    """
    return max(1, len(fmt.continuation(choice).lstrip().encode("utf-8")))


def _infer_choices(run: _Run, examples: Sequence[Example]) -> _Raw:
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
        run.model, groups, batch_size=run.settings.batch_size, pad_id=_pad_id(run.fmt), device=run.device
    )
    return _Raw(values, stats)


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])


def _finish_choices(
    run: _Run, examples: Sequence[Example], raw: _Raw
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    chosen, chosen_norm, gold, predictions = [], [], [], []
    for example, lls in zip(examples, raw.values, strict=True):
        assert example.label is not None  # checked before inference
        per_byte = [ll / choice_bytes(run.fmt, c) for ll, c in zip(lls, example.choices, strict=True)]
        chosen.append(_argmax(lls))
        chosen_norm.append(_argmax(per_byte))
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
    metrics = {
        name: float(resolve_metric(name)(chosen_norm if name == "accuracy_norm" else chosen, gold))
        for name in metric_names(run.task, "indices", CHOICE_METRICS)
    }
    return metrics, predictions


# --------------------------------------------------------------------------- generation


def max_new_tokens(task: TaskSpec, settings: EvalSettings) -> int:
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
        pad_token_id=_pad_id(fmt),
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
    :func:`cut_at_stop`.
    """
    config = _generation_config(model, fmt, new_tokens)
    criteria = _stop_criteria(fmt, stop)
    ends = {_pad_id(fmt), *_eos_ids(model, fmt)}
    order = sorted(range(len(contexts)), key=lambda i: -len(contexts[i]))
    results: list[list[int]] = [[] for _ in contexts]
    real = padded = generated = prefix_tokens = 0
    for batch in _batches(order, batch_size):
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
        "prompt_padding_fraction": round(1 - real / padded, 4) if padded else 0.0,
        "shared_prefix_tokens": prefix_tokens,
    }
    return results, stats


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

    pad = _pad_id(fmt)
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
    if _soft_prompt_tuner(model):
        embeds, mask = _with_soft_prompt(model, ids, mask)
        out = model.get_base_model().generate(
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


# A shared prefix shorter than this is not worth a separate forward pass.
MIN_SHARED_PREFIX = 8


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


def generation_contexts(fmt: PromptFormat, prompts: Sequence[str], room: int) -> list[list[int]]:
    """Context ids of each prompt, at most ``room`` tokens (the start goes), never empty."""
    tok = fmt.tokenizer
    contexts = []
    for prompt in prompts:
        context = fmt.encode_context(prompt)[-max(1, room) :]
        contexts.append(context or [tok.bos_token_id if tok.bos_token_id is not None else _pad_id(fmt)])
    return contexts


def _infer_generation(run: _Run, examples: Sequence[Example]) -> _Raw:
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
    return _Raw(texts, stats)


def _finish_generation(
    run: _Run, examples: Sequence[Example], raw: _Raw
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    how = run.task.generation.extract
    answers = [extract_answer(text, how) for text in raw.values]
    references = [list(example.answers) for example in examples]
    # abs_diff leaves out answers without a number; report how many.
    extra = ("number_unparseable_rate",) if "abs_diff" in run.task.metrics else ()
    names = [*metric_names(run.task, "texts"), *extra]
    metrics = {name: float(resolve_metric(name)(answers, references)) for name in names}
    predictions = [
        {"uid": e.uid, "generated": text, "answer": answer}
        for e, text, answer in zip(examples, raw.values, answers, strict=True)
    ]
    return metrics, predictions


# --------------------------------------------------------------------------- language modelling


def sliding_windows(tokens: Sequence[int], window: int, stride: int) -> list[TokenRequest]:
    """Windows over ``tokens`` as in the transformers perplexity guide.

    Each window holds up to ``window`` tokens and starts ``stride`` after the previous one;
    it scores only the tokens no earlier window scored (the first token of the text has no
    context and is never scored). Every other token is scored exactly once.

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


def _infer_perplexity(run: _Run, examples: Sequence[Example]) -> _Raw:
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
        run.model, requests, batch_size=run.settings.batch_size, pad_id=_pad_id(run.fmt), device=run.device
    )
    stats.update(window=window, stride=stride, windows=len(requests))
    return _Raw([(-sum(totals[a:b]), n) for (a, b), n in zip(spans, counts, strict=True)], stats)


def _finish_perplexity(
    run: _Run, examples: Sequence[Example], raw: _Raw
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    total_nll = math.fsum(nll for nll, _ in raw.values)
    total_tokens = sum(n for _, n in raw.values)
    metrics = {
        name: float(resolve_metric(name)(total_nll, total_tokens))
        for name in metric_names(run.task, "nll", ("perplexity",))
    }
    predictions = [
        {"uid": e.uid, "nll": round(nll, 4), "tokens": n}
        for e, (nll, n) in zip(examples, raw.values, strict=True)
    ]
    return metrics, predictions


CHOICE_METRICS = ("accuracy", "accuracy_norm")

EVALUATORS: dict[str, _Evaluator] = {
    "multiple_choice": _Evaluator("indices", CHOICE_METRICS, _infer_choices, _finish_choices),
    "classification": _Evaluator("indices", CHOICE_METRICS, _infer_choices, _finish_choices),
    "generation": _Evaluator("texts", (), _infer_generation, _finish_generation),
    "language_modeling": _Evaluator("nll", ("perplexity",), _infer_perplexity, _finish_perplexity),
}
