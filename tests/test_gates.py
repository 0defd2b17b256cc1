"""Gates over synthetic records: absolute bounds, rules between cases, baseline regressions."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import grid, make_record, write_benchmark_json, write_run

from peftcore import gates
from peftcore.errors import PeftcoreError, SpecError
from peftcore.gates import GateError, failures_for
from peftcore.gates.baseline import compare_to_baseline, load_baseline
from peftcore.gates.tolerances import parse_tolerances
from peftcore.spec.gates import Compare, Expect, parse_rules
from peftcore.vocab.quantities import Quantity, Tolerance, parse_quantity, reported_metrics
from peftcore.vocab.record import case_key, task_metrics

TASK_FILE = "benchmarks/specs/tasks/squad.yaml"
PROFILE_FILE = "benchmarks/specs/profiles/quick.yaml"


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


# Gates are parsed when specs load (peftcore.spec.gates) and checked against records
# (peftcore.gates); these helpers do both, as a session does, from the blocks a spec would hold.


def check_expect(record: dict, expect: object, file: str | None) -> list:
    parsed = Expect.from_spec(expect, file)
    parsed.check_names(file, {*task_metrics(record), *reported_metrics(record)})
    return gates.check_expect(record, parsed, file)


def check_relative(records: list, rules: object, file: str | None) -> list:
    return gates.check_relative(records, Compare.from_spec(rules, file), file)


def validate_expect(expect: object, file: str, task_metrics: tuple | list = ()) -> None:
    Expect.from_spec(expect, file).check_names(file, task_metrics)


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(
    ("name", "block", "metric"),
    [
        ("f1", "held_out", "f1"),
        ("seen.f1", "seen", "f1"),
        ("held_out.accuracy", "held_out", "accuracy"),
        ("primary", "held_out", "primary"),
        ("peak_memory_bytes", "training", "peak_memory_bytes"),
        ("inference.peak_memory_bytes", "inference", "peak_memory_bytes"),
        ("latency_ms_per_example", "inference", "latency_ms_per_example"),
        ("footprint_bytes", "base_model", "footprint_bytes"),
    ],
)
def test_names_resolve_to_a_block(name: str, block: str, metric: str) -> None:
    assert parse_quantity(name) == Quantity(block, metric)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("acuracy", "did you mean 'accuracy'"),
        ("seen.peak_memory_bytes", "is a cost figure"),
        ("training.latency", "training has no figure"),
        ("valid.f1", "unknown prefix"),
        ("f1 score", "not a metric or figure name"),
    ],
)
def test_bad_names_say_what_is_wrong(name: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_quantity(name)


def test_primary_is_the_tasks_first_metric() -> None:
    record = make_record("lora", "squad")
    assert Quantity("held_out", "primary").resolve(record) == Quantity("held_out", "f1")
    assert Quantity("seen", "primary").value(record) == record["metrics"]["seen"]["f1"]


# --------------------------------------------------------------------------- expect


def test_expect_passes_when_values_are_within_bounds() -> None:
    record = make_record("lora", "squad")  # f1 0.355, peak memory 1.18 GiB
    expect = {
        "f1": {"min": 0.30},
        "seen.f1": {"min": 0.30, "max": 0.9},
        "peak_memory_bytes": {"max": "2 GiB"},
        "inference.latency_ms_per_example": {"max": 100},
    }
    assert check_expect(record, expect, TASK_FILE) == []


def test_a_broken_metric_fails_with_metric_value_bound_and_file() -> None:
    record = make_record("lora", "squad", held_out={"f1": 0.21})
    [failure] = check_expect(record, {"f1": {"min": 0.30}}, TASK_FILE)
    assert failure.case_id == "lora-smollm2-135m-squad"
    assert failure.message == (
        "lora-smollm2-135m-squad: held-out f1 = 0.21 is below min 0.3 "
        "(expect in benchmarks/specs/tasks/squad.yaml)"
    )
    assert (failure.value, failure.bound, failure.quantity) == (0.21, 0.30, "f1")


def test_memory_bounds_accept_yaml_exponents_and_units_and_print_human_sizes() -> None:
    record = make_record("full", "squad")  # 2.31 GiB
    # PyYAML reads 2.0e9 (no sign in the exponent) as a string; it must still work.
    [failure] = check_expect(record, {"peak_memory_bytes": {"max": "2.0e9"}}, "profiles/quick.yaml")
    assert "training peak_memory_bytes = 2.3" in failure.message
    assert "GiB is above max 1.86 GiB" in failure.message
    assert check_expect(record, {"peak_memory_bytes": {"max": "3 GiB"}}, "x.yaml") == []


def test_primary_and_seen_and_methods_filter() -> None:
    base = make_record("base", "arc_easy")  # accuracy 0.43: untrained
    lora = make_record("lora", "arc_easy")  # 0.475
    expect = {"primary": {"min": 0.45, "methods": ["lora*", "qlora", "full"]}}
    assert check_expect(base, expect, PROFILE_FILE) == []  # base is not held to it
    assert check_expect(lora, expect, PROFILE_FILE) == []
    broken = make_record("lora", "arc_easy", held_out={"accuracy": 0.44})
    [failure] = check_expect(broken, expect, PROFILE_FILE)
    assert "held-out accuracy = 0.44 is below min 0.45" in failure.message


def test_a_metric_the_task_does_not_score_is_not_applicable() -> None:
    # A profile-wide bound on f1 says nothing about a multiple-choice task.
    assert check_expect(make_record("lora", "arc_easy"), {"f1": {"min": 0.9}}, PROFILE_FILE) == []


def test_training_bounds_do_not_apply_to_the_untrained_base() -> None:
    expect = {"peak_memory_bytes": {"max": "1 GiB"}, "inference.peak_memory_bytes": {"max": "1 GiB"}}
    assert check_expect(make_record("base", "squad"), expect, PROFILE_FILE) == []
    rules = [{"figure": "train_seconds", "case": "*", "baseline": "base", "must": "below"}]
    assert check_relative(grid(methods=("base", "lora")), rules, PROFILE_FILE) == []


def test_a_declared_metric_missing_from_the_record_fails() -> None:
    record = make_record("lora", "squad")
    del record["metrics"]["held_out"]["exact_match"]
    [failure] = check_expect(record, {"exact_match": {"min": 0.1}}, TASK_FILE)
    assert "held-out exact_match is not in the record" in failure.message


def test_nan_fails_a_bound() -> None:
    record = make_record("lora", "squad", held_out={"f1": float("nan")})
    [failure] = check_expect(record, {"f1": {"min": 0.1}}, TASK_FILE)
    assert "is NaN" in failure.message


def test_failed_cases_are_not_gated_again() -> None:
    record = make_record("lora", "squad", status="oom")
    assert check_expect(record, {"f1": {"min": 0.3}}, TASK_FILE) == []


@pytest.mark.parametrize(
    ("expect", "words"),
    [
        (
            {"exact_matc": {"min": 0.3}},
            "key 'expect.exact_matc': unknown metric or cost figure 'exact_matc'; did you mean 'exact_match'",
        ),
        ({"f1": 0.3}, "expected {min: <number>}"),
        ({"f1": {"minimum": 0.3}}, "unknown key 'minimum'"),
        ({"f1": {"min": "high"}}, "key 'expect.f1.min': expected a number, got 'high'"),
        ({"f1": {"min": 0.5, "max": 0.4}}, "min 0.5 is above max 0.4"),
        ({"f1": {"min": True}}, "expected a number"),
        ({"f1": {"min": 0.1, "methods": 3}}, "expected a name, a glob"),
        ({"f1": {"min": "2 GiB"}}, "expected a number, got '2 GiB'"),
    ],
)
def test_malformed_expect_is_a_one_line_spec_error(expect: dict, words: str) -> None:
    with pytest.raises(SpecError) as info:
        check_expect(make_record("lora", "squad"), expect, TASK_FILE)
    assert words in _one_line(info.value)
    assert TASK_FILE in str(info.value)


def test_validate_expect_knows_the_tasks_own_metrics() -> None:
    validate_expect({"accuracy": {"min": 0.4}}, "tasks/arc_easy.yaml")
    validate_expect({"my_metric": {"min": 0.4}}, "tasks/custom.yaml", task_metrics=["my_metric"])
    with pytest.raises(SpecError, match="my_metric"):
        validate_expect({"my_metric": {"min": 0.4}}, "tasks/custom.yaml")


# --------------------------------------------------------------------------- compare rules


def test_rules_pass_on_the_expected_ordering() -> None:
    records = grid(tasks=("arc_easy", "squad", "lambada"))
    rules = [
        {"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": 0.02},
        {"metric": "primary", "case": "*", "baseline": "base", "must": "beat"},
        {"figure": "peak_memory_bytes", "case": "qlora", "baseline": "lora", "must": "below"},
        {"figure": "adapter_bytes", "case": ["lora", "ia3"], "baseline": "full", "max_ratio": 0.01},
    ]
    assert check_relative(records, rules, PROFILE_FILE) == []


def test_max_drop_is_inclusive_despite_binary_floats() -> None:
    records = [
        make_record("lora", "squad", held_out={"f1": 0.40}),
        make_record("qlora", "squad", held_out={"f1": 0.38}),  # 0.40 - 0.38 = 0.020000000000000018
    ]
    rules = [{"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": 0.02}]
    assert check_relative(records, rules, PROFILE_FILE) == []


def test_a_drop_beyond_max_drop_fails_on_the_checked_case() -> None:
    records = grid(methods=("lora", "qlora"), tasks=("squad",))
    records[1]["metrics"]["held_out"]["f1"] = 0.30  # qlora, lora has 0.355
    rules = [{"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": 0.02, "why": "4-bit base"}]
    [failure] = check_relative(records, rules, PROFILE_FILE)
    assert failure.case_id == "qlora-smollm2-135m-squad"
    assert failure.baseline_id == "lora-smollm2-135m-squad"
    assert failure.message == (
        "qlora-smollm2-135m-squad: held-out f1 0.3 is 0.055 worse than lora's 0.355; "
        "max_drop 0.02 allows 0.02 (compare rule 1 in benchmarks/specs/profiles/quick.yaml; 4-bit base)"
    )
    assert failures_for([failure], "lora-smollm2-135m-squad") == [failure]
    assert failures_for([failure], "base-smollm2-135m-squad") == []


def test_relative_max_drop() -> None:
    records = grid(methods=("lora", "qlora"), tasks=("squad",))  # 0.355 vs 0.348: 2 % lower
    ok = [{"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": "3%"}]
    too_tight = [{"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": "1%"}]
    assert check_relative(records, ok, None) == []
    [failure] = check_relative(records, too_tight, None)
    assert "max_drop 1% allows 0.00355" in failure.message


def test_every_method_must_beat_base_and_direction_counts() -> None:
    records = grid(tasks=("arc_easy", "lambada"))
    rules = [{"metric": "primary", "case": "*", "baseline": "base", "must": "beat"}]
    for record in records:  # ia3 falls below base on both tasks
        if record["method"] == "ia3":
            record["metrics"]["held_out"]["accuracy" if record["task"] == "arc_easy" else "perplexity"] = (
                0.40 if record["task"] == "arc_easy" else 40.0
            )
    failures = check_relative(records, rules, PROFILE_FILE)
    assert [f.case_id for f in failures] == ["ia3-smollm2-135m-arc_easy", "ia3-smollm2-135m-lambada"]
    assert "held-out accuracy 0.4 does not beat base's 0.43 (higher is better)" in failures[0].message
    assert "held-out perplexity 40 does not beat base's 38 (lower is better)" in failures[1].message


def test_figure_below_with_human_sizes() -> None:
    records = grid(methods=("lora", "qlora"), tasks=("squad",))
    records[1]["training"]["peak_memory_bytes"] = records[0]["training"]["peak_memory_bytes"] + 2**20
    rules = [{"figure": "peak_memory_bytes", "case": "qlora", "baseline": "lora", "must": "below"}]
    [failure] = check_relative(records, rules, PROFILE_FILE)
    assert "training peak_memory_bytes 1.1" in failure.message
    assert "GiB is not below lora's 1.1" in failure.message


def test_pairs_are_matched_on_model_task_and_seed_only() -> None:
    records = grid(methods=("lora", "qlora"), tasks=("squad", "arc_easy"), seeds=(0, 1))
    records = [r for r in records if not (r["method"] == "lora" and r["seed"] == 1 and r["task"] == "squad")]
    for record in records:
        if record["method"] == "qlora":
            record["metrics"]["held_out"]["f1" if record["task"] == "squad" else "accuracy"] = 0.1
    rules = [{"metric": "primary", "case": "qlora", "baseline": "lora", "max_drop": 0.02, "task": "squad"}]
    [failure] = check_relative(records, rules, None)  # seed 1 of squad has no lora; arc_easy filtered out
    assert failure.case_id == "qlora-smollm2-135m-squad-seed0"


def test_missing_or_failed_baseline_skips_the_rule() -> None:
    records = [
        make_record("qlora", "squad", held_out={"f1": 0.0}),
        make_record("lora", "squad", status="oom"),
    ]
    rules = [{"metric": "f1", "case": "qlora", "baseline": "lora", "max_drop": 0.02}]
    assert check_relative(records, rules, None) == []
    assert check_relative(records[:1], rules, None) == []


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("qlora beats lora", "key 'compare[0]': expected a mapping"),
        (
            {"metric": "f1", "case": "qlora", "baseline": "lora"},
            "give exactly one of must: (beat, below, above), max_drop:, max_ratio:",
        ),
        (
            {"metric": "f1", "case": "qlora", "baseline": "lora", "must": "win"},
            "expected one of beat, below, above, got 'win'",
        ),
        ({"case": "qlora", "baseline": "lora", "must": "beat"}, "name exactly one of metric: or figure:"),
        ({"metric": "f1", "baseline": "lora", "must": "beat"}, "missing case:"),
        ({"metric": "f1", "case": "qlora", "baseline": "lo*", "must": "beat"}, "expected one method name"),
        ({"metric": "peak_memory_bytes", "case": "q", "baseline": "l", "must": "below"}, "write figure:"),
        (
            {"figure": "f1", "case": "q", "baseline": "l", "must": "below"},
            "'f1' is not a cost figure; write metric:",
        ),
        ({"metric": "f1", "case": "q", "baseline": "l", "max_drop": "-2%"}, "non-negative number"),
        ({"metric": "f1", "case": "q", "baseline": "l", "max_ratio": 0}, "expected a positive number"),
        (
            {"metric": "f1", "case": "q", "baseline": "l", "must": "beat", "cases": "x"},
            "key 'compare[0].cases'",
        ),
    ],
)
def test_malformed_rules_are_one_line_spec_errors(rule: object, words: str) -> None:
    with pytest.raises(SpecError) as info:
        parse_rules([rule], PROFILE_FILE)
    assert words in _one_line(info.value)
    assert PROFILE_FILE in str(info.value)


def test_rules_must_be_a_list() -> None:
    with pytest.raises(SpecError, match="expected a list of rules"):
        check_relative([], {"metric": "f1"}, PROFILE_FILE)
    assert parse_rules(None, PROFILE_FILE) == []


# --------------------------------------------------------------------------- tolerances


def test_parse_tolerances() -> None:
    assert dict(parse_tolerances("f1:2%, accuracy:0.02,seen.f1:5%,peak_memory_bytes:10%")) == {
        "f1": Tolerance(2.0, relative=True),
        "accuracy": Tolerance(0.02, relative=False),
        "seen.f1": Tolerance(5.0, relative=True),
        "training.peak_memory_bytes": Tolerance(10.0, relative=True),
    }
    assert Tolerance(2, True).allowed(0.5) == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "expected metric:tolerance pairs"),
        ("f1", "'f1' is not metric:tolerance"),
        ("f1:abc", "f1: expected a non-negative number"),
        ("f1:-2%", "non-negative"),
        ("f1:2%,f1:3%", "f1 is given twice"),
        ("seen.peak_memory_bytes:1", "is a cost figure"),
    ],
)
def test_unreadable_tolerances_are_clear_errors(text: str, words: str) -> None:
    with pytest.raises(GateError) as info:
        parse_tolerances(text)
    assert words in _one_line(info.value)
    assert str(info.value).startswith("--metric-compare-fail")


# --------------------------------------------------------------------------- baseline comparison


def test_unchanged_values_pass() -> None:
    records = grid()
    result = compare_to_baseline(records, grid(), parse_tolerances("f1:2%,accuracy:0.02"))
    assert not result.failed
    assert result.regressed == [] and result.improved == []
    assert len(result.unchanged) == 12  # 6 methods x 2 tasks, one metric each
    assert result.format_table().startswith(
        "metric comparison against baseline: 0 regressed, 0 improved, 12 unchanged"
    )


def test_a_broken_metric_regresses_with_a_readable_table() -> None:
    baseline = grid()
    records = grid()
    records[9]["metrics"]["held_out"]["f1"] = 0.30  # qlora on squad: 0.348 -> 0.30
    records[2]["metrics"]["held_out"]["accuracy"] += 0.05  # lora on arc_easy improves
    result = compare_to_baseline(records, baseline, parse_tolerances("f1:2%,accuracy:0.02"))
    assert result.failed
    [row] = result.regressed
    assert (row.case_id, row.quantity, row.baseline, row.current) == (
        "qlora-smollm2-135m-squad",
        "f1",
        0.348,
        0.30,
    )
    assert [r.case_id for r in result.improved] == ["lora-smollm2-135m-arc_easy"]
    assert result.regressions_for("qlora-smollm2-135m-squad") == [row]
    table = result.format_table()
    assert "1 regressed, 1 improved, 10 unchanged" in table
    assert "qlora-smollm2-135m-squad  f1      0.348     0.3      -0.048 (-13.8%)  0.00696 (2%)" in table


def test_direction_decides_what_a_regression_is() -> None:
    baseline = grid(methods=("lora",), tasks=("lambada",))
    records = grid(methods=("lora",), tasks=("lambada",))
    records[0]["metrics"]["held_out"]["perplexity"] *= 1.10  # perplexity up: worse
    records[0]["training"]["peak_memory_bytes"] //= 2  # memory down: better
    result = compare_to_baseline(records, baseline, parse_tolerances("perplexity:5%,peak_memory_bytes:5%"))
    assert [r.quantity for r in result.regressed] == ["perplexity"]
    assert [r.quantity for r in result.improved] == ["training.peak_memory_bytes"]


def test_new_cases_are_reported_not_failed() -> None:
    baseline = grid(methods=("base", "lora"))
    records = grid(methods=("base", "lora", "dora"))
    result = compare_to_baseline(records, baseline, parse_tolerances("primary:0.01"))
    assert not result.failed
    assert result.new_cases == ("dora-smollm2-135m-arc_easy", "dora-smollm2-135m-squad")
    assert "new (not in the baseline, not compared): dora-smollm2-135m-arc_easy" in result.format_table()


def test_no_case_in_common_is_noted_not_failed() -> None:
    result = compare_to_baseline(
        grid(methods=("dora",)), grid(methods=("lora",)), parse_tolerances("primary:1%")
    )
    assert not result.failed and result.matched_cases == ()
    assert "note: no case of this session is in the baseline" in result.format_table()


def test_cases_not_run_and_failed_cases_are_listed() -> None:
    baseline = grid(methods=("lora", "qlora"), tasks=("squad",))
    records = [make_record("lora", "squad", status="oom")]
    result = compare_to_baseline(records, baseline, parse_tolerances("f1:2%"))
    assert not result.failed
    assert result.missing_cases == ("qlora-smollm2-135m-squad",)
    assert result.unavailable == (("lora-smollm2-135m-squad", "oom in this run"),)


def test_seed_suffix_is_considered_when_matching() -> None:
    baseline = grid(methods=("lora",), tasks=("squad",), seeds=(0, 1))  # ids end in -seed0, -seed1
    records = grid(methods=("lora",), tasks=("squad",))  # one seed (0), no suffix
    records[0]["metrics"]["held_out"]["f1"] = 0.1
    assert case_key(records[0]) == case_key(baseline[0])
    result = compare_to_baseline(records, baseline, parse_tolerances("f1:0.01"))
    assert [r.case_id for r in result.regressed] == ["lora-smollm2-135m-squad"]
    assert result.missing_cases == ("lora-smollm2-135m-squad-seed1",)


def test_a_metric_no_case_reports_is_a_clear_error() -> None:
    with pytest.raises(
        GateError,
        match=r"reports metric 'f2'; expected one of: accuracy, accuracy_norm, exact_match, f1",
    ):
        compare_to_baseline(grid(), grid(), parse_tolerances("f2:2%"))


def test_a_baseline_of_another_profile_is_refused() -> None:
    with pytest.raises(GateError, match="baseline was recorded with profile full; this run is quick"):
        compare_to_baseline(grid(), grid(profile="full"), parse_tolerances("f1:2%"))


# --------------------------------------------------------------------------- loading baselines


def test_load_baseline_from_pytest_benchmark_json(tmp_path: Path) -> None:
    records = grid(methods=("lora", "qlora"))
    path = write_benchmark_json(tmp_path / "0001_baseline.json", records)
    assert load_baseline(path, profile="quick") == records


def test_load_baseline_from_a_run_folder(tmp_path: Path) -> None:
    run = write_run(tmp_path, "20260101-quick", grid(methods=("lora",)))
    assert [r["case_id"] for r in load_baseline(run)] == [
        "lora-smollm2-135m-arc_easy",
        "lora-smollm2-135m-squad",
    ]


def test_baseline_of_another_profile(tmp_path: Path) -> None:
    path = write_benchmark_json(tmp_path / "b.json", grid(methods=("lora",), profile="full"))
    with pytest.raises(GateError, match="recorded with profile full; this run is quick"):
        load_baseline(path, profile="quick")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("not json", "not a readable JSON file"),
        (json.dumps({"machine_info": {}}), "not a pytest-benchmark file (no 'benchmarks' list)"),
        (
            json.dumps({"benchmarks": [{"name": "test_x", "extra_info": {}}]}),
            "no benchmark carries extra_info['peftcore_record']",
        ),
        (
            json.dumps({"benchmarks": [{"name": "t", "extra_info": {"peftcore_record": {"format": 0}}}]}),
            "record format 0, this peftcore reads 1",
        ),
    ],
)
def test_unusable_baseline_files(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "baseline.json"
    path.write_text(content)
    with pytest.raises(GateError) as info:
        load_baseline(path)
    assert words in _one_line(info.value)


def test_a_baseline_record_is_checked_like_a_record_file(tmp_path: Path) -> None:
    record = make_record("lora", "squad")
    del record["run_id"]
    path = write_benchmark_json(tmp_path / "baseline.json", [record])
    with pytest.raises(GateError) as info:
        load_baseline(path)
    assert "benchmark 'test_case[lora-smollm2-135m-squad]': missing keys run_id" in _one_line(info.value)


def test_missing_baseline_and_plain_folder(tmp_path: Path) -> None:
    with pytest.raises(GateError, match="does not exist"):
        load_baseline(tmp_path / "nope.json")
    with pytest.raises(GateError, match="not a run folder"):
        load_baseline(tmp_path)


def test_errors_are_peftcore_errors() -> None:
    assert issubclass(GateError, PeftcoreError)


def test_reserved_memory_is_a_cost_lower_is_better() -> None:
    records = grid(methods=("lora", "qlora"), tasks=("squad",))  # qlora reserves less
    rules = [{"figure": "peak_reserved_bytes", "case": "qlora", "baseline": "lora", "must": "beat"}]
    assert check_relative(records, rules, PROFILE_FILE) == []
    reference = [make_record("lora", "squad")]
    records = [make_record("lora", "squad", training={"peak_reserved_bytes": 2**31})]
    result = compare_to_baseline(records, reference, parse_tolerances("peak_reserved_bytes:10%"))
    assert [r.quantity for r in result.regressed] == ["training.peak_reserved_bytes"]


def test_baseline_does_not_import_pytest() -> None:
    code = (
        "import sys, peftcore.gates.baseline; "
        "sys.exit('pytest' in sys.modules or 'matplotlib' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_gates_do_not_import_pytest() -> None:
    code = "import sys, peftcore.gates; sys.exit('pytest' in sys.modules or 'matplotlib' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_a_slice_of_the_profile_may_leave_out_a_metric_the_baseline_reports() -> None:
    # `-m "lora and sst2"` with make test's tolerance list: squad's f1 is in the baseline only.
    baseline = grid(methods=("lora",), tasks=("squad", "arc_easy"))
    records = grid(methods=("lora",), tasks=("arc_easy",))
    result = compare_to_baseline(records, baseline, parse_tolerances("f1:0.05,accuracy:0.1"))
    assert not result.regressed


# --------------------------------------------------------------------------- measured tolerances


def test_measured_tolerances_are_each_cases_own_spread_over_seeds() -> None:
    from peftcore.gates.tolerances import measured_tolerances

    records = grid(methods=("base", "lora"), tasks=("arc_easy",), seeds=(0, 1, 2))
    tolerances = measured_tolerances(records)
    lora = tolerances.cases["lora-smollm2-135m-arc_easy"]
    values = [r["metrics"]["held_out"]["accuracy"] for r in records if r["method"] == "lora"]
    assert lora["accuracy"].value == pytest.approx(max(values) - min(values), rel=1e-2)
    assert not lora["accuracy"].relative
    assert lora["training.trainable_params"] == Tolerance(0.0, relative=False)  # exact
    assert lora["training.adapter_bytes"] == Tolerance(0.0, relative=False)
    assert lora["training.peak_memory_bytes"].relative and lora["training.peak_memory_bytes"].value >= 10
    assert "seen.accuracy" in lora
    base = tolerances.cases["base-smollm2-135m-arc_easy"]
    assert "training.trainable_params" not in base  # the untrained base has no training block


def test_tolerances_need_several_seeds() -> None:
    from peftcore.gates.tolerances import measured_tolerances

    with pytest.raises(GateError, match="several seeds"):
        measured_tolerances(grid(methods=("lora",), tasks=("arc_easy",)))


def test_a_tolerance_file_round_trips_and_a_case_gets_its_own(tmp_path: Path) -> None:
    from peftcore.gates.tolerances import Tolerances, tolerances_yaml

    table = Tolerances(
        {"accuracy": Tolerance(0.2, relative=False)},
        {"lora-smollm2-135m-arc_easy": {"accuracy": Tolerance(0.01, relative=False)}},
    )
    path = tmp_path / "tolerances.yaml"
    path.write_text(tolerances_yaml(table, "a test"))
    loaded = parse_tolerances(str(path))
    assert (dict(loaded.default), dict(loaded.cases)) == (dict(table.default), dict(table.cases))
    assert path.read_text().startswith("# a test\n")
    baseline = grid(methods=("lora", "dora"), tasks=("arc_easy",))
    current = grid(methods=("lora", "dora"), tasks=("arc_easy",))
    for record in current:
        record["metrics"]["held_out"]["accuracy"] -= 0.05  # both drop by 0.05
    result = compare_to_baseline(current, baseline, loaded)
    assert [(r.case_id, r.quantity) for r in result.regressed] == [("lora-smollm2-135m-arc_easy", "accuracy")]
    assert [r.case_id for r in result.unchanged] == ["dora-smollm2-135m-arc_easy"]  # default 0.2


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("default: {accuracy: lots}\n", "key 'default': accuracy: expected a non-negative number"),
        ("cases: {x: [1]}\n", "key 'cases.x': expected a mapping"),
        ("tolerance: {}\n", "expected the keys default and cases"),
    ],
)
def test_a_bad_tolerance_file_names_the_file_and_key(tmp_path: Path, text: str, words: str) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(GateError) as info:
        parse_tolerances(str(path))
    assert str(path) in str(info.value) and words in str(info.value)


def test_a_tolerance_file_of_nested_aliases_is_refused_at_once(tmp_path: Path) -> None:
    """The tolerance file goes through the spec loader: a 'billion laughs' cannot hang the gate."""
    from peftcore.gates.tolerances import load_tolerances

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = tmp_path / "tolerances.yaml"
    path.write_text("\n".join(lines) + "\ndefault: *a8\n", encoding="utf-8")
    with pytest.raises(GateError, match=r"--metric-compare-fail: .*tolerances.yaml: .*billion laughs"):
        load_tolerances(path)
