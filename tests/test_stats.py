"""Statistics of per-example scores, checked against the libraries practitioners trust:
lm-evaluation-harness's standard error, statsmodels' Wilson interval, McNemar and multiple-testing
corrections, scipy's paired t-test and bootstrap, scikit-learn's macro F1."""

from __future__ import annotations

import doctest
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from peftcore.score.label_metrics import macro_f1
from peftcore.stats import intervals, multiple, paired, regression
from peftcore.stats.intervals import (
    Interval,
    bootstrap_interval,
    bootstrap_weights,
    macro_f1_statistic,
    mean_interval,
    ratio_perplexity,
    weighted_mean,
    z_value,
)
from peftcore.stats.multiple import benjamini_hochberg, holm
from peftcore.stats.paired import (
    compare_corpus,
    compare_scores,
    compare_seeded,
    minimum_detectable_difference,
)
from peftcore.stats.regression import regression_p_value

REPO = Path(__file__).resolve().parents[1]


def binary(successes: int, n: int) -> np.ndarray:
    return np.r_[np.ones(successes), np.zeros(n - successes)]


def hand_macro_f1(predicted: list[object], gold: list[object], classes: list[object]) -> float:
    """sklearn's f1_score(average="macro", labels=classes, zero_division=0), written out."""
    scores = []
    for label in classes:
        true_pos = sum(p == label and g == label for p, g in zip(predicted, gold, strict=True))
        predicted_count = sum(p == label for p in predicted)
        gold_count = sum(g == label for g in gold)
        denominator = predicted_count + gold_count
        scores.append(2 * true_pos / denominator if denominator else 0.0)
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------- module hygiene


def test_import_leaves_scipy_unloaded() -> None:
    # pytest collection imports modules that import this one; scipy would cost every test run
    code = "import sys, peftcore.stats.intervals, peftcore.stats.paired, peftcore.stats.multiple, "
    code += "peftcore.stats.regression; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False"


def test_docstring_examples() -> None:
    results = [
        doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        for module in (intervals, paired, multiple, regression)
    ]
    assert sum(result.failed for result in results) == 0
    assert sum(result.attempted for result in results) >= 15


# --------------------------------------------------------------------------- one metric, one split


def test_mean_stderr_is_lm_eval_harness_mean_stderr() -> None:
    import lm_eval.api.metrics as lm_eval_metrics

    rng = np.random.default_rng(0)
    scores = rng.normal(0.4, 0.2, size=57)
    assert mean_interval(scores).stderr == pytest.approx(lm_eval_metrics.mean_stderr(list(scores)), rel=1e-12)
    # acc's stderr in lm-eval is the stderr of its `mean` aggregation
    acc_stderr = lm_eval_metrics.stderr_for_metric(lm_eval_metrics.mean, bootstrap_iters=100)
    correct = [1, 0, 1, 1, 0, 1, 1, 1, 0, 1, 1]
    interval = mean_interval(correct)
    assert interval.method == "wilson"
    assert interval.stderr == pytest.approx(acc_stderr(correct), rel=1e-12)


@pytest.mark.parametrize(
    ("successes", "n", "confidence"),
    [
        (0, 10, 0.95),
        (10, 10, 0.95),
        (3, 7, 0.95),
        (517, 1000, 0.95),
        (1, 1, 0.95),
        (12, 40, 0.9),
        (5, 9, 0.99),
    ],
)
def test_wilson_bounds_are_statsmodels_proportion_confint(successes: int, n: int, confidence: float) -> None:
    import statsmodels.stats.proportion as proportion

    interval = mean_interval(binary(successes, n), confidence=confidence)
    low, high = proportion.proportion_confint(successes, n, alpha=1 - confidence, method="wilson")
    assert interval.method == "wilson"
    assert interval.estimate == successes / n
    assert (interval.low, interval.high) == pytest.approx((low, high), abs=1e-12)


def test_normal_interval_for_scores_that_are_not_a_proportion() -> None:
    from scipy.stats import norm

    scores = [0.5, 0.25, 1.0, 0.0, 0.75]
    interval = mean_interval(scores, confidence=0.9)
    z = norm.ppf(1 - 0.1 / 2)
    stderr = np.std(scores, ddof=1) / math.sqrt(5)
    assert interval.method == "normal"
    assert interval.stderr == pytest.approx(stderr)
    assert (interval.low, interval.high) == pytest.approx((0.5 - z * stderr, 0.5 + z * stderr))
    assert (interval.resamples, interval.seed) == (None, None)


def test_one_example_has_no_stderr_and_no_normal_interval() -> None:
    interval = mean_interval([0.3])
    assert math.isnan(interval.stderr) and math.isnan(interval.low) and math.isnan(interval.high)
    # the Wilson interval is defined for a single 0/1 example
    proportion = mean_interval([1])
    assert math.isnan(proportion.stderr)
    assert 0 < proportion.low < 1 and proportion.high == 1.0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), data=st.data(), confidence=st.floats(0.5, 0.999))
def test_wilson_interval_holds_the_proportion_and_stays_in_unit_range(
    n: int, data: st.DataObject, confidence: float
) -> None:
    successes = data.draw(st.integers(0, n))
    interval = mean_interval(binary(successes, n), confidence=confidence)
    assert 0.0 <= interval.low <= interval.estimate <= interval.high <= 1.0


def test_z_value_is_the_two_sided_normal_quantile() -> None:
    from scipy.stats import norm

    assert z_value(0.95) == pytest.approx(1.959963984540054, rel=1e-12)
    assert z_value(0.8) == pytest.approx(norm.ppf(0.9), rel=1e-12)


def test_results_are_json_ready() -> None:
    interval = bootstrap_interval(weighted_mean([1.0, 2.0, 4.0]), 3, estimate=7 / 3, resamples=50, seed=3)
    comparison = compare_scores([1, 0, 1, 1], [0, 0, 1, 0], metric="accuracy", resamples=50)
    for record in (mean_interval([0.1, 0.2]).to_dict(), interval.to_dict(), comparison.to_dict()):
        assert json.loads(json.dumps(record)) == record
        assert all(type(value) in (float, int, str, type(None)) for value in record.values())
    assert interval.to_dict()["resamples"] == 50 and interval.to_dict()["seed"] == 3


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_weights_are_seeded_resample_counts() -> None:
    weights = bootstrap_weights(50, resamples=400, seed=7)
    assert weights.shape == (400, 50)
    assert np.issubdtype(weights.dtype, np.integer)
    assert (weights >= 0).all() and (weights.sum(axis=1) == 50).all()
    assert np.array_equal(weights, bootstrap_weights(50, resamples=400, seed=7))
    assert not np.array_equal(weights, bootstrap_weights(50, resamples=400, seed=8))
    # each example is drawn once per resample on average, with the multinomial's variance 1 - 1/n
    assert weights.mean() == 1.0
    assert weights.var() == pytest.approx(1 - 1 / 50, rel=0.05)


def test_bootstrap_interval_is_deterministic_for_a_seed() -> None:
    values = np.random.default_rng(1).normal(size=200)
    first = bootstrap_interval(weighted_mean(values), 200, estimate=values.mean(), seed=11)
    assert first == bootstrap_interval(weighted_mean(values), 200, estimate=values.mean(), seed=11)
    assert first != bootstrap_interval(weighted_mean(values), 200, estimate=values.mean(), seed=12)
    assert (first.method, first.resamples, first.seed, first.n) == ("bootstrap", 1000, 11, 200)


def test_bootstrap_of_a_mean_matches_the_closed_form_and_scipy() -> None:
    from scipy.stats import bootstrap

    values = np.random.default_rng(2).normal(5.0, 2.0, size=1000)
    interval = bootstrap_interval(weighted_mean(values), 1000, estimate=values.mean(), seed=0)
    closed_form = mean_interval(values)
    assert interval.stderr == pytest.approx(closed_form.stderr, rel=0.1)
    # scipy draws its resamples differently, so only the endpoints' neighbourhood is comparable
    reference = bootstrap(
        (values,), np.mean, n_resamples=1000, method="percentile", rng=np.random.default_rng(0)
    ).confidence_interval
    width = interval.high - interval.low
    assert abs(interval.low - reference.low) < 0.1 * width
    assert abs(interval.high - reference.high) < 0.1 * width


def test_unit_weights_give_each_statistic_its_plain_value() -> None:
    predicted = [1, 1, 0, 0, 2, 2, 1]
    gold = [1, 0, 0, 0, 2, 1, 1]
    ones = np.ones((2, len(gold)))
    assert macro_f1_statistic(predicted, gold)(ones) == pytest.approx([macro_f1(predicted, gold)] * 2)
    nll, tokens = [3.0, 10.5, 0.25], [2, 7, 1]
    assert ratio_perplexity(nll, tokens)(np.ones((1, 3)))[0] == pytest.approx(math.exp(13.75 / 10))
    assert weighted_mean([0.5, 0.0, 1.0])(np.ones((1, 3)))[0] == pytest.approx(0.5)


def test_macro_f1_on_a_resample_is_sklearn_over_the_original_classes() -> None:
    rng = np.random.default_rng(3)
    labels = ["neg", "neu", "pos", "rare"]
    gold = list(rng.choice(labels[:3], size=40))
    predicted = list(rng.choice(labels[:3], size=40))
    gold[0], predicted[1] = "rare", "rare"  # one gold and one predicted "rare": resamples often lose it
    classes = sorted(set(gold) | set(predicted))
    weights = bootstrap_weights(40, resamples=30, seed=4)
    values = macro_f1_statistic(predicted, gold)(weights)
    try:
        from sklearn.metrics import f1_score
    except ImportError:
        f1_score = None
    lost_rare = 0
    for row, value in zip(weights, values, strict=True):
        resampled_predicted = list(np.repeat(predicted, row))
        resampled_gold = list(np.repeat(gold, row))
        lost_rare += "rare" not in resampled_gold + resampled_predicted
        assert value == pytest.approx(hand_macro_f1(resampled_predicted, resampled_gold, classes))
        if f1_score is not None:
            reference = f1_score(
                resampled_gold, resampled_predicted, labels=classes, average="macro", zero_division=0
            )
            assert value == pytest.approx(reference)
    assert lost_rare > 0  # the case the F1-0 convention is about was exercised


def test_macro_f1_keeps_labels_of_different_types_apart() -> None:
    statistic = macro_f1_statistic([1, "1", 2], [1, 1, 2])
    assert statistic(np.ones((1, 3)))[0] == pytest.approx(macro_f1([1, "1", 2], [1, 1, 2]))


def test_perplexity_overflow_is_infinite_without_a_warning() -> None:
    statistic = ratio_perplexity([1e6, 1.0], [1, 1])
    assert statistic(np.array([[2, 0], [1, 1]])).tolist()[0] == math.inf


# --------------------------------------------------------------------------- paired comparisons


def contingency(a: np.ndarray, b: np.ndarray) -> list[list[int]]:
    return [
        [int(np.sum((a == 1) & (b == 1))), int(np.sum((a == 1) & (b == 0)))],
        [int(np.sum((a == 0) & (b == 1))), int(np.sum((a == 0) & (b == 0)))],
    ]


@pytest.mark.parametrize(
    ("only_a", "only_b", "both", "neither"),
    [(7, 2, 30, 11), (0, 5, 10, 10), (4, 4, 1, 1), (1, 0, 3, 0), (13, 29, 200, 58)],
)
def test_mcnemar_is_statsmodels_exact_mcnemar(only_a: int, only_b: int, both: int, neither: int) -> None:
    import statsmodels.stats.contingency_tables as contingency_tables

    a = np.r_[np.ones(only_a), np.zeros(only_b), np.ones(both), np.zeros(neither)]
    b = np.r_[np.zeros(only_a), np.ones(only_b), np.ones(both), np.zeros(neither)]
    comparison = compare_scores(a, b, metric="accuracy", resamples=100)
    expected = contingency_tables.mcnemar(contingency(a, b), exact=True).pvalue
    assert comparison.test == "exact McNemar"
    assert comparison.p_value == pytest.approx(expected, rel=1e-12)
    assert comparison.difference == pytest.approx((only_a - only_b) / len(a))


def test_no_discordant_pairs_is_no_evidence() -> None:
    comparison = compare_scores([1, 0, 1], [1, 0, 1], resamples=100)
    assert (comparison.p_value, comparison.low, comparison.high) == (1.0, 0.0, 0.0)


def test_paired_t_is_scipy_ttest_rel() -> None:
    from scipy.stats import ttest_rel

    rng = np.random.default_rng(5)
    a = rng.normal(0.6, 0.2, size=80)
    b = a - rng.normal(0.05, 0.1, size=80)
    comparison = compare_scores(a, b, metric="f1")
    assert comparison.test == "paired t"
    assert comparison.p_value == pytest.approx(ttest_rel(a, b).pvalue, rel=1e-10)
    assert comparison.stderr == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(80))
    assert comparison.low < comparison.difference < comparison.high
    assert (comparison.interval_method, comparison.resamples) == ("paired bootstrap", 1000)


def test_paired_t_with_identical_differences_is_decided_not_nan() -> None:
    assert compare_scores([0.5, 0.25], [0.5, 0.25], resamples=10).p_value == 1.0
    assert compare_scores([0.5, 0.25], [0.25, 0.0], resamples=10).p_value == 0.0


def test_normal_interval_when_asked_for_no_resamples() -> None:
    a, b = [0.2, 0.9, 0.4, 0.7], [0.1, 0.5, 0.5, 0.3]
    comparison = compare_scores(a, b, resamples=0)
    half_width = z_value(0.95) * comparison.stderr
    assert (comparison.interval_method, comparison.resamples) == ("normal", None)
    assert (comparison.low, comparison.high) == pytest.approx(
        (comparison.difference - half_width, comparison.difference + half_width)
    )


def test_mde_uses_the_spread_of_the_paired_differences() -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(6)
    a, b = rng.integers(0, 2, 300), rng.integers(0, 2, 300)
    comparison = compare_scores(a, b, confidence=0.9, resamples=10)
    sd = np.std(a - b, ddof=1)
    assert comparison.mde == pytest.approx((norm.ppf(0.95) + norm.ppf(0.8)) * sd / math.sqrt(300))
    assert minimum_detectable_difference(sd, 300, confidence=0.9) == pytest.approx(comparison.mde)
    assert minimum_detectable_difference(1.0, 100, power=0.5) == pytest.approx(norm.ppf(0.975) / 10)


def test_corpus_comparison_of_means_is_the_paired_bootstrap_of_compare_scores() -> None:
    # the same seed draws the same resamples, so both routes see the same differences
    rng = np.random.default_rng(7)
    a, b = rng.random(120), rng.random(120)
    by_scores = compare_scores(a, b, seed=3)
    by_corpus = compare_corpus(
        weighted_mean(a), weighted_mean(b), 120, estimate_a=a.mean(), estimate_b=b.mean(), seed=3
    )
    assert (by_corpus.low, by_corpus.high) == pytest.approx((by_scores.low, by_scores.high))
    assert by_corpus.difference == pytest.approx(by_scores.difference)
    assert by_corpus.stderr == pytest.approx(by_scores.stderr, rel=0.1)
    assert (by_corpus.test, by_corpus.interval_method) == ("paired bootstrap", "paired bootstrap")


def test_corpus_bootstrap_p_value() -> None:
    gold = [0, 1, 2, 0, 1, 2, 0, 1] * 5
    good = macro_f1_statistic(gold, gold)
    bad = macro_f1_statistic([0] * 40, gold)
    clear = compare_corpus(good, bad, 40, estimate_a=1.0, estimate_b=0.2, resamples=199)
    assert clear.p_value == pytest.approx(2 / 200)  # no resample favours b: the +1 floor
    same = compare_corpus(good, good, 40, estimate_a=1.0, estimate_b=1.0, resamples=199)
    assert (same.p_value, same.low, same.high, same.stderr) == (1.0, 0.0, 0.0, 0.0)


def test_paired_bootstrap_is_narrower_than_ignoring_the_pairing() -> None:
    # a and b share most of their per-example difficulty: pairing removes it
    rng = np.random.default_rng(8)
    difficulty = rng.normal(size=500)
    a, b = difficulty + 0.1 + rng.normal(0, 0.1, 500), difficulty + rng.normal(0, 0.1, 500)
    paired = compare_scores(a, b)
    unpaired_stderr = math.hypot(mean_interval(a).stderr, mean_interval(b).stderr)
    assert paired.stderr < unpaired_stderr / 5
    assert paired.p_value < 1e-6 and paired.low > 0


def test_seeded_comparison_with_one_seed_a_side_is_the_example_bootstrap() -> None:
    rng = np.random.default_rng(9)
    a, b = rng.random(90), rng.random(90)
    seeded = compare_seeded([a], [b], seed=4)
    by_scores = compare_scores(a, b, seed=4)
    assert (seeded.low, seeded.high) == pytest.approx((by_scores.low, by_scores.high))
    assert seeded.test == "paired bootstrap (seeds, then examples)"


def test_seeded_comparison_counts_the_training_noise() -> None:
    rng = np.random.default_rng(10)
    base = rng.random(200)

    def runs(shift: float, seed_sd: float) -> list[np.ndarray]:
        return [base + shift + rng.normal(0, seed_sd) for _ in range(5)]

    calm_a, calm_b = runs(0.05, 0.001), runs(0.0, 0.001)
    calm = compare_seeded(calm_a, calm_b, seed=1)
    noisy = compare_seeded(runs(0.05, 0.1), runs(0.0, 0.1), seed=1)
    assert noisy.stderr > 10 * calm.stderr
    assert calm.p_value < 0.01 and calm.low > 0
    assert calm == compare_seeded(calm_a, calm_b, seed=1)  # the seed fixes both levels of resampling
    assert calm != compare_seeded(calm_a, calm_b, seed=2)


# --------------------------------------------------------------------------- multiplicity

P_VALUE_VECTORS = [
    [0.01, 0.04, 0.03, 0.2],
    [0.05, 0.05, 0.05, 0.01],  # ties
    [1.0, 0.5, 1.0, 0.001],  # p = 1
    [0.0, 0.3, 0.0],
    [0.02],
    [0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216],
]


@pytest.mark.parametrize("p_values", P_VALUE_VECTORS)
def test_holm_and_bh_are_statsmodels_multipletests(p_values: list[float]) -> None:
    import statsmodels.stats.multitest as multitest

    assert holm(p_values) == pytest.approx(multitest.multipletests(p_values, method="holm")[1], abs=1e-15)
    assert benjamini_hochberg(p_values) == pytest.approx(
        multitest.multipletests(p_values, method="fdr_bh")[1], abs=1e-15
    )


@settings(max_examples=80, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=30))
def test_adjusted_p_values_are_conservative_and_keep_the_order(p_values: list[float]) -> None:
    raw = np.array(p_values)
    by_holm, by_bh = holm(raw), benjamini_hochberg(raw)
    order = np.argsort(raw, kind="stable")
    for adjusted in (by_holm, by_bh):
        assert (adjusted >= raw).all() and (adjusted <= 1).all()
        assert (np.diff(adjusted[order]) >= 0).all()
    assert (by_bh <= by_holm + 1e-12).all()  # FDR control asks less than family-wise control


def test_no_p_values_adjust_to_none() -> None:
    assert holm([]).size == 0 and benjamini_hochberg([]).size == 0


# --------------------------------------------------------------------------- the CI gate's test


def test_regression_p_value() -> None:
    from scipy.stats import norm

    assert regression_p_value(0.02, 0.01, 0.005) == pytest.approx(
        norm.sf(0.02 / math.sqrt(1e-4 + 2 * 2.5e-5))
    )
    assert regression_p_value(0.0, 0.01, 0.0) == 1.0
    assert regression_p_value(-0.3, 0.0, 0.0) == 1.0  # an improvement is never a regression
    assert regression_p_value(1e-9, 0.0, 0.0) == 0.0
    # training noise counts twice: baseline and current are each one training run
    assert regression_p_value(0.02, 0.0, 0.01) == pytest.approx(norm.sf(0.02 / math.sqrt(2e-4)))
    with pytest.raises(ValueError, match="training_sd"):
        regression_p_value(0.1, 0.01, -0.01)
    with pytest.raises(ValueError, match="drop is NaN"):
        regression_p_value(math.nan, 0.01, 0.0)


# --------------------------------------------------------------------------- errors

STATISTIC = weighted_mean([0.1, 0.5, 0.9])

TAKES_CONFIDENCE = {
    "mean_interval": lambda c: mean_interval([0.1, 0.2], confidence=c),
    "bootstrap_interval": lambda c: bootstrap_interval(STATISTIC, 3, estimate=0.5, confidence=c),
    "compare_scores": lambda c: compare_scores([0.1, 0.2], [0.3, 0.1], confidence=c),
    "compare_corpus": lambda c: compare_corpus(
        STATISTIC, STATISTIC, 3, estimate_a=0.5, estimate_b=0.5, confidence=c
    ),
    "compare_seeded": lambda c: compare_seeded([[0.1, 0.2]], [[0.3, 0.1]], confidence=c),
    "minimum_detectable_difference": lambda c: minimum_detectable_difference(0.5, 10, confidence=c),
    "z_value": z_value,
}


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.5, math.nan])
@pytest.mark.parametrize("name", sorted(TAKES_CONFIDENCE))
def test_confidence_outside_the_unit_interval(name: str, confidence: float) -> None:
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got"):
        TAKES_CONFIDENCE[name](confidence)


def test_unpaired_scores_name_both_lengths() -> None:
    with pytest.raises(ValueError, match=r"unpaired: .*a has 100 examples, b has 90"):
        compare_scores(np.zeros(100), np.zeros(90))
    with pytest.raises(ValueError, match=r"unpaired: .*have 3 examples, b's have 2"):
        compare_seeded([[0.1, 0.2, 0.3]], [[0.1, 0.2]])
    with pytest.raises(ValueError, match=r"same examples, got lengths \[2, 3\]"):
        compare_seeded([[0.1, 0.2, 0.3], [0.1, 0.2]], [[0.1, 0.2, 0.3]])


def test_nan_scores_are_counted() -> None:
    with pytest.raises(ValueError, match="scores holds 2 NaN of 4 scores"):
        mean_interval([0.1, math.nan, 0.3, math.nan])
    with pytest.raises(ValueError, match="b_scores holds 1 NaN"):
        compare_scores([0.1, 0.2], [0.1, math.nan])
    with pytest.raises(ValueError, match="infinite"):
        weighted_mean([0.1, math.inf])


@pytest.mark.parametrize(
    "call",
    [
        lambda: mean_interval([]),
        lambda: compare_scores([], []),
        lambda: compare_seeded([], [[0.1, 0.2]]),
        lambda: weighted_mean([]),
        lambda: macro_f1_statistic([], []),
        lambda: bootstrap_weights(0),
    ],
)
def test_empty_input(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


def test_other_bad_input() -> None:
    with pytest.raises(ValueError, match="at least 2 examples, got 1"):
        compare_scores([1], [0])
    with pytest.raises(ValueError, match="at least 2 resamples, got 1"):
        bootstrap_interval(STATISTIC, 3, estimate=0.5, resamples=1)
    with pytest.raises(ValueError, match=r"one value per resample: expected shape \(10,\), got \(10, 3\)"):
        bootstrap_interval(lambda weights: weights.astype(float), 3, estimate=0.5, resamples=10)
    with pytest.raises(ValueError, match="returned NaN on 10 of 10 resamples"):
        bootstrap_interval(lambda weights: np.full(len(weights), math.nan), 3, estimate=0.5, resamples=10)
    with pytest.raises(ValueError, match="predicted has 2 labels, gold has 3"):
        macro_f1_statistic([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="at least one token"):
        ratio_perplexity([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        holm([0.1, 1.2])
    with pytest.raises(ValueError, match=r"p-values must be in \[0, 1\]"):
        benjamini_hochberg([math.nan])
    assert isinstance(mean_interval([0.5, 0.5]), Interval)
