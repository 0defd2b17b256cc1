"""Quality metrics as pure functions, each under a name :mod:`peftcore.vocab.metrics` declares.

Every metric lives in ``METRICS`` under the name task specs use (``metrics: [f1, exact_match]``);
importing this module registers them all. Whether higher or lower is better, and what a metric
takes, is declared once, with its name, in :mod:`peftcore.vocab.metrics`. What a metric's
function takes depends on ``Metric.inputs``:

- ``"texts"``: ``fn(predictions, references) -> float``; ``predictions`` are generated strings,
  each reference is one gold string or a sequence of gold strings (the best one counts).
  In :mod:`~peftcore.score.text_metrics` (SQuAD F1 and exact match, ROUGE-L),
  :mod:`~peftcore.score.number_metrics` (GSM8K numbers) and
  :mod:`~peftcore.score.semantic_metrics` (embedding cosine, BERTScore).
- ``"indices"``: ``fn(predicted, gold) -> float`` over chosen and gold labels (choice indices),
  in :mod:`~peftcore.score.label_metrics`.
- ``"nll"``: ``fn(total_nll, total_tokens) -> float`` over summed negative log-likelihood,
  in :mod:`~peftcore.score.nll_metrics`.
- ``"judge"``: no function here (``fn is None``); the value comes from ``peftcore.score.judge``.

An evaluator calls a metric by name with ``resolve_metric(name)(predictions, references)``; a
name that is not built in is loaded with ``evaluate``. Values are fractions in [0, 1] (not the
0-100 of the official SQuAD script) unless the description says otherwise. Every function
raises ``ValueError`` on empty or mismatched inputs.

Heavy libraries (torch, sentence-transformers, bert_score, evaluate, rouge_score) are imported
inside the functions that need them: importing this module stays cheap (pytest collection).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from peftcore.score.label_metrics import accuracy, macro_f1
from peftcore.score.metric_inputs import Reference, check_pairs, mean
from peftcore.score.metric_registry import METRICS, Metric, MetricError, add_metric, built_in, register
from peftcore.score.nll_metrics import perplexity
from peftcore.score.number_metrics import (
    abs_diff,
    extract_number,
    number_exact_match,
    number_parse_counts,
    number_unparseable_rate,
)
from peftcore.score.semantic_metrics import MINILM_INSTALL, bertscore_f1, cosine_similarity, minilm_path
from peftcore.score.text_metrics import (
    exact_match,
    exact_match_score,
    f1,
    f1_score,
    normalize_answer,
    rouge_l,
)
from peftcore.vocab.metrics import judged_metrics

__all__ = [
    "METRICS",
    "MINILM_INSTALL",
    "Metric",
    "MetricError",
    "Reference",
    "abs_diff",
    "accuracy",
    "bertscore_f1",
    "cosine_similarity",
    "evaluate_module_path",
    "exact_match",
    "exact_match_score",
    "extract_number",
    "f1",
    "f1_score",
    "macro_f1",
    "minilm_path",
    "normalize_answer",
    "number_exact_match",
    "number_parse_counts",
    "number_unparseable_rate",
    "perplexity",
    "register",
    "resolve_metric",
    "rouge_l",
]

# --------------------------------------------------------------------------- judged metrics

for _name in judged_metrics():
    _criterion = _name.removeprefix("judge_")
    add_metric(
        built_in(_name, None, f"mean {_criterion} score 1-5 given by an LLM judge (peftcore.score.judge)")
    )


# --------------------------------------------------------------------------- resolving names

# Direction of common `evaluate` metrics that are errors, not scores.
_LOWER_IS_BETTER_EVALUATE = frozenset(
    {"wer", "cer", "ter", "mae", "mse", "rmse", "mape", "smape", "perplexity"}
)


def resolve_metric(name: str) -> Metric:
    """The metric a spec names: a built-in, or else an ``evaluate`` metric loaded now.

    A name that is not built in goes to ``evaluate.load`` (a hub name or a path to a metric
    script); ``"module:key"`` picks one value of a module returning several (``"rouge:rougeL"``).
    Loading happens here, when specs are resolved, so an unknown or unreachable metric fails
    before anything trains, with ``MetricError`` naming it and listing the built-ins.

    >>> resolve_metric("f1")(["blue"], [["blue", "navy"]])
    1.0
    """
    if name in METRICS:
        return METRICS[name]
    return _load_evaluate_metric(name)


@functools.cache
def _load_evaluate_metric(name: str) -> Metric:
    module_name, key = name, None
    head, sep, tail = name.rpartition(":")
    if sep and head and tail.isidentifier():
        module_name, key = head, tail
    try:
        import evaluate

        module = evaluate.load(module_name)
    except Exception as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise MetricError(
            f"metric {name!r} is not a built-in metric and could not be loaded with "
            f"evaluate.load({module_name!r}) (offline, or no such metric: {reason}); "
            f"built-in metrics: {', '.join(sorted(METRICS))}"
        ) from None

    def compute(predictions: Sequence[Any], references: Sequence[Any]) -> float:
        check_pairs(predictions, references)
        result = module.compute(predictions=list(predictions), references=list(references))
        return _pick_value(name, key, result)

    description = (str(getattr(module, "description", "") or "").strip().splitlines() or [""])[0]
    lower = (key or Path(module_name).stem).lower() in _LOWER_IS_BETTER_EVALUATE
    return Metric(name, compute, not lower, f"evaluate metric {module_name}: {description}".strip())


def _pick_value(name: str, key: str | None, result: Any) -> float:
    if not isinstance(result, dict) or not result:
        raise MetricError(f"evaluate metric {name!r} returned {type(result).__name__}, not a dict of values")
    if key is None:
        base = name.rsplit("/", 1)[-1].removesuffix(".py")
        if base in result:
            key = base
        elif len(result) == 1:
            key = next(iter(result))
        else:
            raise MetricError(
                f"evaluate metric {name!r} returns several values ({', '.join(sorted(result))}); "
                f"name one as '{name}:<key>'"
            )
    if key not in result:
        raise MetricError(
            f"evaluate metric {name!r} returned no {key!r} (it has {', '.join(sorted(result))})"
        )
    value = result[key]
    if isinstance(value, (list, tuple)):
        return mean(float(v) for v in value) if value else math.nan
    return float(value)


# --------------------------------------------------------------------------- evaluate modules

_MODULE_DIR = Path(__file__).resolve().parent / "metric_modules"
_EVALUATE_MODULES = {
    "squad_f1": ("f1", "exact_match"),
    "gsm8k_number": ("number_exact_match", "abs_diff", "number_unparseable_rate"),
    "classification": ("accuracy", "macro_f1"),
    "rouge_l": ("rouge_l",),
    "semantic_similarity": ("cosine_similarity", "bertscore_f1"),
}


def evaluate_module_path(name: str) -> Path:
    """Path of the local ``evaluate`` module computing metric ``name`` (or the module named so).

    ``evaluate.load(str(evaluate_module_path("f1"))).compute(predictions=..., references=...)``
    works offline and returns every value of that module (here ``f1`` and ``exact_match``).
    ``MetricError`` listing the modules for a name none of them computes.

    >>> evaluate_module_path("abs_diff").name
    'gsm8k_number.py'
    """
    for module, names in _EVALUATE_MODULES.items():
        if name == module or name in names:
            return _MODULE_DIR / f"{module}.py"
    known = sorted({*_EVALUATE_MODULES, *(n for names in _EVALUATE_MODULES.values() for n in names)})
    raise MetricError(f"no evaluate module for metric {name!r}; there are modules for: {', '.join(known)}")
