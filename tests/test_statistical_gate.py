"""Gates that know noise: paired comparisons of cases, ``compare:`` rules with ``confidence:``, the
statistical baseline gate (``mode: statistical``) and the noise it is measured from, on
hand-built records whose per-example scores are known."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from peftcore.errors import GateError, SpecError
from peftcore.gates.baseline import compare_to_baseline
from peftcore.gates.noise import Noise, NoiseModel, measured_noise, upper_sd
from peftcore.gates.rules import check_relative
from peftcore.gates.tolerances import load_tolerances
from peftcore.results.compare import CompareError, compare, examples_frame
from peftcore.spec.gates import Compare, parse_rules

N = 100


def _record(
    method: str,
    correct: list[float],
    *,
    brier: list[float] | None = None,
    seed: int = 0,
    uids: list[str] | None = None,
    memory: int = 1_000_000,
    params: int = 1000,
    task: str = "sst2",
    tuner: str = "lora",
) -> dict[str, Any]:
    uids = uids or [f"u{i}" for i in range(len(correct))]
    brier = brier if brier is not None else [0.5 - 0.2 * c for c in correct]
    predicted = [1 if c else 0 for c in correct]
    return {
        "format": 1,
        "run_id": "r",
        "case_id": f"{method}-m-{task}" + (f"-seed{seed}" if seed else ""),
        "method": method,
        "model": "m",
        "task": task,
        "seed": seed,
        "status": "finished",
        "spec": {"method": {"tuner": tuner}, "task": {"metrics": ["accuracy", "brier_score"]}},
        "metrics": {"held_out": {"accuracy": float(np.mean(correct)), "brier_score": float(np.mean(brier))}},
        "examples": {
            "held_out": {
                "uid": uids,
                "scores": {"accuracy": correct, "brier_score": brier},
                "corpus": {"macro_f1": {"predicted": predicted, "gold": [1] * len(correct)}},
            }
        },
        "training": {"trainable_params": params, "peak_memory_bytes": memory, "adapter_bytes": 4 * params},
    }


def _scores(p: float, n: int = N, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    return [float(x) for x in (rng.random(n) < p)]


# --------------------------------------------------------------------------- peftcore.compare


def test_compare_pairs_by_uid_and_uses_exact_mcnemar_for_0_1_scores() -> None:
    import statsmodels.stats.contingency_tables as statsmodels

    a, b = _scores(0.8, seed=1), _scores(0.6, seed=2)
    first, second = _record("lora", a), _record("base", b)
    # b's examples in another order: pairing is by uid, not position
    order = list(reversed(range(N)))
    second["examples"]["held_out"]["uid"] = [f"u{i}" for i in order]
    second["examples"]["held_out"]["scores"]["accuracy"] = [b[i] for i in order]
    result = compare(first, second, "accuracy")
    assert result.n == N
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    table = [[0, 0], [0, 0]]
    for x, y in zip(a, b, strict=True):
        table[int(x)][int(y)] += 1
    assert result.test == "exact McNemar"
    assert result.p_value == pytest.approx(statsmodels.mcnemar(table, exact=True).pvalue)
    assert result.low < result.difference < result.high


def test_compare_refuses_cases_scored_on_different_examples() -> None:
    first = _record("lora", _scores(0.8))
    second = _record("base", _scores(0.6), uids=[f"v{i}" for i in range(N)])
    with pytest.raises(CompareError, match="unpaired: lora-m-sst2 and base-m-sst2 were scored on different"):
        compare(first, second, "accuracy")


def test_compare_needs_per_example_scores_and_a_confidence_in_range() -> None:
    old = _record("lora", _scores(0.8))
    del old["examples"]
    with pytest.raises(CompareError, match="no per-example scores"):
        compare(old, _record("base", _scores(0.6)), "accuracy")
    with pytest.raises(CompareError, match="confidence must be in"):
        compare(_record("lora", _scores(0.8)), _record("base", _scores(0.6)), "accuracy", confidence=1.5)


def test_compare_corpus_metric_and_seeds() -> None:
    a, b = _record("lora", _scores(0.9)), _record("base", _scores(0.5))
    for record in (a, b):
        predicted = record["examples"]["held_out"]["corpus"]["macro_f1"]["predicted"]
        record["metrics"]["held_out"]["macro_f1"] = _macro_f1(predicted, [1] * N)
    result = compare(a, b, "macro_f1")
    assert result.test == "paired bootstrap"
    assert result.difference == pytest.approx(
        a["metrics"]["held_out"]["macro_f1"] - b["metrics"]["held_out"]["macro_f1"]
    )
    seeded = compare([_record("lora", _scores(0.8, seed=s), seed=s) for s in range(3)], b, "accuracy")
    assert "seeds" in seeded.test


def _macro_f1(predicted: list[int], gold: list[int]) -> float:
    from peftcore.score.label_metrics import macro_f1

    return macro_f1(predicted, gold)


def test_examples_frame_is_one_row_per_case_split_example() -> None:
    frame = examples_frame([_record("lora", _scores(0.8)), _record("base", _scores(0.6))])
    assert len(frame) == 2 * N
    assert {"case_id", "split", "uid", "accuracy", "brier_score", "macro_f1.predicted"} <= set(frame.columns)
    assert frame.groupby("method")["accuracy"].mean()["lora"] == pytest.approx(np.mean(_scores(0.8)))


# --------------------------------------------------------------------------- compare: rules


def _rules(*rules: dict[str, Any]) -> Compare:
    return Compare(tuple(parse_rules(list(rules), "profile.yaml")), tuple(rules))


def test_must_beat_with_confidence_needs_the_interval_above_zero() -> None:
    base = _record("base", _scores(0.5, seed=3))
    clear = _record("lora", [1.0] * N)
    one_more = list(base["examples"]["held_out"]["scores"]["accuracy"])
    one_more[one_more.index(0.0)] = 1.0  # one more right answer than the base
    slight = _record("lora", one_more)
    rule = {"metric": "accuracy", "case": "lora", "baseline": "base", "must": "beat", "confidence": 0.95}
    assert check_relative([base, clear], _rules(rule), "profile.yaml") == []
    (failure,) = check_relative([base, slight], _rules(rule), "profile.yaml")
    assert "does not beat base beyond noise" in failure.message and "paired examples" in failure.message
    # Without confidence, one more right answer beats the base.
    plain = {k: v for k, v in rule.items() if k != "confidence"}
    assert check_relative([base, slight], _rules(plain), "profile.yaml") == []


def test_max_drop_with_confidence_is_checked_on_the_worse_bound() -> None:
    base = _record("dora", _scores(0.7, seed=4))
    same = _record("dora@merged", base["examples"]["held_out"]["scores"]["accuracy"])
    worse = _record("dora@merged", _scores(0.4, seed=5))
    rule = {
        "metric": "accuracy",
        "case": "dora@merged",
        "baseline": "dora",
        "max_drop": 0.05,
        "confidence": 0.9,
    }
    assert check_relative([base, same], _rules(rule), "profile.yaml") == []
    assert check_relative([base, worse], _rules(rule), "profile.yaml")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"confidence": 1.5}, "expected a number in \\(0, 1\\)"),
        ({"confidence": 0}, "expected a number in \\(0, 1\\)"),
        ({"confidence": "high"}, "expected a number in \\(0, 1\\)"),
        ({"metric": "judge_correctness", "confidence": 0.95}, "keeps no per-example scores"),
        ({"must": "below", "confidence": 0.95}, "only a metric: rule with must: beat or max_drop"),
    ],
)
def test_bad_confidence_in_a_rule_is_a_one_line_spec_error(extra: dict[str, Any], message: str) -> None:
    rule = {"metric": "accuracy", "case": "lora", "baseline": "base", "must": "beat", **extra}
    with pytest.raises(SpecError, match=message) as info:
        parse_rules([rule], "profile.yaml")
    assert "profile.yaml" in str(info.value) and "compare[0].confidence" in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- the statistical gate


def _model(**tables: dict[str, Noise]) -> NoiseModel:
    return NoiseModel({name: table for name, table in tables.items()}, 0.95, "test")


NOISE = {
    "accuracy": Noise(0.02),
    "brier_score": Noise(0.01),
    "training.trainable_params": Noise(exact=True),
    "training.peak_memory_bytes": Noise(3.0, relative=True, floor=30.0, floor_relative=True),
}


def test_the_same_run_is_unchanged_and_a_collapse_regresses() -> None:
    scores = _scores(0.85, seed=6)
    baseline = [_record("lora", scores)]
    model = _model(**{"lora-m-sst2": NOISE})
    result = compare_to_baseline([_record("lora", scores)], baseline, model)
    assert not result.failed and len(result.unchanged) == 4
    collapsed = _record("lora", _scores(0.45, seed=7), brier=[0.6] * N)
    result = compare_to_baseline([collapsed], baseline, model)
    assert {r.quantity for r in result.regressed} == {"accuracy", "brier_score"}
    table = result.format_table()
    assert "noise sd" in table and "Holm p" in table and "statistical gate: 4 quantities" in table


def test_a_drop_within_the_noise_is_unchanged() -> None:
    scores = _scores(0.85, seed=8)
    nudged = list(scores)
    for i in [i for i, s in enumerate(scores) if s][:3]:
        nudged[i] = 0.0  # three examples flip: 0.03, within training sd 0.02 and sampling noise
    model = _model(**{"lora-m-sst2": NOISE})
    result = compare_to_baseline([_record("lora", nudged)], [_record("lora", scores)], model)
    assert not result.failed


def test_exact_figures_fail_on_any_change_and_memory_has_a_floor() -> None:
    scores = _scores(0.85, seed=9)
    model = _model(**{"lora-m-sst2": NOISE})
    baseline = [_record("lora", scores)]
    more_params = _record("lora", scores, params=1001)
    assert [r.quantity for r in compare_to_baseline([more_params], baseline, model).regressed] == [
        "training.trainable_params"
    ]
    within_floor = _record("lora", scores, memory=1_250_000)
    assert not compare_to_baseline([within_floor], baseline, model).failed
    beyond = _record("lora", scores, memory=1_600_000)
    assert [r.quantity for r in compare_to_baseline([beyond], baseline, model).regressed] == [
        "training.peak_memory_bytes"
    ]


def test_an_untrained_case_must_reproduce_whatever_the_sampling_error() -> None:
    """The base trains nothing: a change of its answers beyond float rounding is a broken
    pipeline, however few examples moved (here four of 100: within sampling error)."""
    scores = _scores(0.6, seed=11)
    moved = list(scores)
    for i in [i for i, s in enumerate(scores) if s][:4]:
        moved[i] = 0.0
    model = _model(**{"base-m-sst2": {"accuracy": Noise(0.0), "brier_score": Noise(0.0)}})
    before, after = _record("base", scores, tuner="none"), _record("base", moved, tuner="none")
    assert {r.quantity for r in compare_to_baseline([after], [before], model).regressed} == {
        "accuracy",
        "brier_score",
    }
    nudged = _record(
        "base",
        scores,
        tuner="none",
        brier=[b + 1e-6 for b in before["examples"]["held_out"]["scores"]["brier_score"]],
    )
    nudged["metrics"]["held_out"]["brier_score"] += 1e-6
    assert not compare_to_baseline([nudged], [before], model).failed  # float rounding: under the floor


def test_a_baseline_without_per_example_scores_or_on_other_examples_is_an_error() -> None:
    scores = _scores(0.85, seed=10)
    model = _model(**{"lora-m-sst2": NOISE})
    old = _record("lora", scores)
    del old["examples"]
    with pytest.raises(GateError, match=r"no per-example scores.*record the baseline"):
        compare_to_baseline([_record("lora", scores)], [old], model)
    other = _record("lora", scores, uids=[f"v{i}" for i in range(N)])
    with pytest.raises(GateError, match="unpaired"):
        compare_to_baseline([_record("lora", scores)], [other], model)


def test_holm_corrects_over_every_quantity() -> None:
    """Twenty cases each dropping by about two noise sds: each alone would be flagged at 5%
    one-sided, but not after Holm over the 20."""
    model = _model(**{f"m{i}-m-sst2": {"brier_score": Noise(0.01)} for i in range(20)})
    current, baseline = [], []
    for i in range(20):
        scores = _scores(0.8, seed=20 + i)
        brier = [0.3] * N
        baseline.append(_record(f"m{i}", scores, brier=brier))
        current.append(_record(f"m{i}", scores, brier=[0.3 + 0.03] * N))  # drop 0.03 = 2.1 x sqrt(2) x 0.01
    result = compare_to_baseline(current, baseline, model)
    assert not result.failed
    assert all(0.05 < r.p_value <= 1 for r in result.rows)


# --------------------------------------------------------------------------- the noise file


def test_measured_noise_from_seeds() -> None:
    records = []
    for seed, (acc, memory, size) in enumerate([(0.8, 100, 4000), (0.7, 110, 4000), (0.9, 105, 4000)]):
        for method, tuner, adapter in (("lora", "lora", size), ("adalora", "adalora", size + 8 * seed)):
            record = _record(method, _scores(acc, seed=seed), seed=seed, memory=memory, tuner=tuner)
            record["training"]["adapter_bytes"] = adapter
            records.append(record)
    model = measured_noise(records)
    lora = model.cases["lora-m-sst2"]
    values = [r["metrics"]["held_out"]["accuracy"] for r in records if r["method"] == "lora"]
    assert lora["accuracy"].training_sd == pytest.approx(upper_sd(values))
    assert upper_sd(values) > np.std(values, ddof=1)
    assert lora["training.trainable_params"].exact and lora["training.adapter_bytes"].exact
    assert lora["training.peak_memory_bytes"].relative and lora["training.peak_memory_bytes"].floor == 30.0
    adalora = model.cases["adalora-m-sst2"]
    assert not adalora["training.adapter_bytes"].exact and adalora["training.adapter_bytes"].relative


def test_a_case_with_one_seed_takes_its_noise_from_an_earlier_spread() -> None:
    from peftcore.gates.noise import sd_from_spread

    one = _record("lora", _scores(0.8))
    model = measured_noise([one], earlier={"lora-m-sst2": {"accuracy": 0.06}})
    table = model.cases["lora-m-sst2"]
    assert table["accuracy"].training_sd == pytest.approx(sd_from_spread(0.06, 3))
    assert "brier_score" not in table  # no earlier spread: not gated
    assert table["training.trainable_params"].exact
    with pytest.raises(GateError, match="several seeds"):
        measured_noise([one])


def test_upper_sd_matches_the_chi_square_bound() -> None:
    from scipy.stats import chi2

    values = [1.0, 2.0, 4.0, 7.0]
    sd = float(np.std(values, ddof=1))
    assert upper_sd(values, 0.8) == pytest.approx(sd * math.sqrt(3 / chi2.ppf(0.2, 3)))
    assert upper_sd([1.0]) == 0.0


def test_statistical_file_round_trips_and_bad_input_names_the_key(tmp_path: Path) -> None:
    from peftcore.gates.noise import noise_yaml

    model = _model(**{"lora-m-sst2": NOISE})
    path = tmp_path / "noise.yaml"
    path.write_text(noise_yaml(model, "header", {"run": "s"}))
    loaded = load_tolerances(path)
    assert isinstance(loaded, NoiseModel)
    assert loaded.cases["lora-m-sst2"]["training.peak_memory_bytes"].floor == 30.0
    assert loaded.cases["lora-m-sst2"]["training.trainable_params"].exact
    for text, message in [
        ("mode: statistical\nconfidence: 2\n", "key 'confidence': expected a number in \\(0, 1\\)"),
        (
            "mode: statistical\ncases: {a: {accuracy: {sd: 1}}}\n",
            "cases.a'.accuracy: expected 'exact' or a mapping",
        ),
        (
            "mode: statistical\ncases: {a: {accuracy: {training_sd: -1}}}\n",
            "training_sd: expected a non-negative",
        ),
        ("mode: noisy\n", "key 'mode': expected statistical"),
        ("mode: statistical\nextra: 1\n", "unknown key"),
    ]:
        path.write_text(text)
        with pytest.raises(GateError, match=message):
            load_tolerances(path)


# --------------------------------------------------------------------------- the shipped gate

BASELINES = Path(__file__).resolve().parents[1] / "reports" / "baselines"


def _shipped_runs(name: str) -> list[dict[str, Any]]:
    import gzip
    import json

    with gzip.open(BASELINES / name, "rt", encoding="utf-8") as stream:
        return [json.loads(line) for line in stream]


def _shipped_noise() -> NoiseModel:
    model = load_tolerances(BASELINES / "smoke-noise.yaml")
    assert isinstance(model, NoiseModel)
    return model


def test_the_shipped_noise_is_what_the_shipped_seed_runs_measure() -> None:
    """smoke-noise.yaml is `peftcore tolerances --statistical --earlier smoke-spreads-amx.yaml`
    of smoke-seeds.jsonl.gz, nothing edited by hand."""
    from peftcore.gates.tolerances import Tolerances

    spreads = load_tolerances(BASELINES / "smoke-spreads-amx.yaml")
    assert isinstance(spreads, Tolerances)
    earlier = {
        case: {k: t.value for k, t in table.items() if not t.relative}
        for case, table in spreads.cases.items()
    }
    shipped = _shipped_noise()
    measured = measured_noise(_shipped_runs("smoke-seeds.jsonl.gz"), earlier=earlier)
    assert set(shipped.cases) == set(measured.cases)
    for case, table in measured.cases.items():
        assert set(shipped.cases[case]) == set(table), case
        for label, noise in table.items():
            kept = shipped.cases[case][label]
            assert kept.exact == noise.exact and kept.relative == noise.relative, (case, label)
            assert kept.training_sd == pytest.approx(noise.training_sd, rel=1e-3, abs=1e-12), (case, label)


def test_reruns_at_other_seeds_pass_the_shipped_gate() -> None:
    """The false-alarm rate per make test: each ordered pair of the shipped seeds is one rerun
    of the smoke profile against one baseline (every case the two seeds share)."""
    from peftcore.gates.calibration import describe, rerun_trials

    runs = _shipped_runs("smoke-seeds.jsonl.gz")
    trials = rerun_trials(runs, _shipped_noise())
    seeds = {r["seed"] for r in runs}
    assert len(trials) == len(seeds) * (len(seeds) - 1) >= 2
    assert all(t.quantities > 0 for t in trials)
    assert not any(t.regressed for t in trials), describe(trials)


def test_lora_at_a_tenth_of_its_learning_rate_is_caught() -> None:
    """A real regression smaller than a broken pipeline: the smoke profile's LoRA cases trained
    at 2e-5 instead of 2e-4 (reports/baselines/lora-lr-tenth.jsonl.gz), against the baseline."""
    from peftcore.gates.baseline import load_baseline
    from peftcore.vocab.record import case_key

    weak = {case_key(r): r for r in _shipped_runs("lora-lr-tenth.jsonl.gz")}
    baseline = load_baseline(BASELINES / "smoke.json")
    # The whole profile as make test runs it, LoRA's cases weakened: Holm counts every quantity.
    current = [weak.get(case_key(r), r) for r in baseline]
    result = compare_to_baseline(current, baseline, _shipped_noise())
    assert len(result.rows) > 200
    assert {r.case_id for r in result.regressed} & {str(r["case_id"]) for r in weak.values()}, (
        result.format_table(result.rows)
    )
