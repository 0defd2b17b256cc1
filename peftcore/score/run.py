"""Scoring a model on a task's examples: ``score()`` picks the evaluator by ``task.type``, runs
it under inference mode and the requested precision, and measures what inference costs.

Evaluators (one module each): ``multiple_choice`` and ``classification`` in
:mod:`peftcore.score.choices`, ``generation`` in :mod:`peftcore.score.generation`,
``language_modeling`` in :mod:`peftcore.score.perplexity`.

Token ids come from :class:`peftcore.train.prompting.PromptFormat`, so scoring sees exactly the
context and answer tokens training used. The model may be a transformers model or a peft
model (LoRA and friends, prompt tuning and prefix tuning, whose virtual tokens are
accounted for), full precision or bitsandbytes-quantized.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from peftcore.data.example import Example
from peftcore.device import resolve_precision
from peftcore.measure import PeakMemory, stopwatch
from peftcore.score.choices import CHOICES
from peftcore.score.evaluator import Evaluator, ScoringRun, metric_names
from peftcore.score.generation import GENERATION
from peftcore.score.model_capabilities import max_input_length
from peftcore.score.perplexity import PERPLEXITY
from peftcore.score.uncertainty import metric_intervals
from peftcore.train.prompting import PromptFormat

if TYPE_CHECKING:
    from peftcore.spec import EvalSettings, TaskSpec

EVALUATORS: dict[str, Evaluator] = {
    "multiple_choice": CHOICES,
    "classification": CHOICES,
    "generation": GENERATION,
    "language_modeling": PERPLEXITY,
}


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
    - ``examples``: every example's uid and per-example scores
      (:meth:`peftcore.score.evaluator.ExampleScores.to_dict`).
    - ``uncertainty``: metric name -> standard error and 95% interval
      (:func:`peftcore.score.uncertainty.metric_intervals`).
    """

    metrics: dict[str, float]
    predictions: list[dict[str, Any]]
    inference: dict[str, Any]
    examples: dict[str, Any] = field(default_factory=dict)
    uncertainty: dict[str, dict[str, Any]] = field(default_factory=dict)

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
    # A metric the evaluator cannot feed fails before any work.
    metric_names(task, evaluator.gives, evaluator.extra)
    precision = resolve_precision(precision, device)
    limit = max_length or getattr(settings, "max_length", None) or max_input_length(model)
    run = ScoringRun(model=model, fmt=fmt, task=task, settings=settings, device=device, max_length=limit)
    memory = PeakMemory(device)
    with _inference(model, device, precision), memory, stopwatch() as clock:
        raw = evaluator.infer(run, examples)
    metrics, predictions, kept = evaluator.finish(run, examples, raw)
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
    return ScoreResult(
        metrics=metrics,
        predictions=predictions,
        inference=inference,
        examples=kept.to_dict(),
        uncertainty=metric_intervals(metrics, kept),
    )


@contextlib.contextmanager
def _inference(model: Any, device: str, precision: str) -> Iterator[None]:
    """Eval mode, no autograd, autocast to ``precision``; the model's mode is given back after.

    ``ValueError`` for a precision other than bf16, fp16 or fp32.
    """
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


def score_answer_losses(
    model: Any,
    fmt: PromptFormat,
    examples: Sequence[Example],
    settings: EvalSettings,
    *,
    device: str,
    precision: str,
    max_length: int | None = None,
) -> list[float]:
    """Each example's answer loss (:mod:`peftcore.score.answer_loss`), in order; precision and
    ``max_length`` as :func:`score` takes them."""
    from peftcore.score.answer_loss import answer_losses

    limit = max_length or getattr(settings, "max_length", None) or max_input_length(model)
    with _inference(model, device, resolve_precision(precision, device)):
        return answer_losses(
            model, fmt, examples, batch_size=settings.batch_size, device=device, max_length=limit
        )
