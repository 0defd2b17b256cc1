"""Scores outside the task, without a model: the ``eval.forgetting`` and ``eval.also_score``
settings, the names gates use for them (``forgetting``, ``ood.<task>.<metric>``), the gates and
``--metric-compare-fail`` on them, the case identity, and the report's section."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import grid, make_record, write_run

from peftcore import gates
from peftcore.data.tasks import load_task
from peftcore.errors import SpecError
from peftcore.gates.baseline import compare_to_baseline
from peftcore.gates.tolerances import parse_tolerances
from peftcore.pipeline.identity import identify
from peftcore.pipeline.off_task import load_off_task_data
from peftcore.pipeline.session import BenchmarkSession
from peftcore.report import write_report
from peftcore.spec import SpecStore, expand
from peftcore.spec.gates import Compare, Expect
from peftcore.vocab.quantities import Quantity, higher_is_better, parse_quantity
from peftcore.vocab.record import figure_direction

PROFILE = """\
description: tests/test_off_task.py
methods: [base, lora]
models: [smollm2-135m]
tasks: [sst2, arc_easy]
data: {train: 4, held_out: 6, seen: 2}
eval:
  forgetting: {task: coqa_passages, documents: 5, max_tokens: 32}
  also_score: [arc_easy, nq_open]
"""
VERSIONS = {"torch": "2.13.0", "peftcore": "0.1.0+abcdef012345"}


def _profile(specs: Path, text: str = PROFILE) -> SpecStore:
    (specs / "profiles" / "offtask.yaml").write_text(text)
    return SpecStore(specs)


def _spec_error(specs: Path, text: str) -> SpecError:
    with pytest.raises(SpecError) as caught:
        expand(_profile(specs, text), "offtask")
    assert "\n" not in str(caught.value)
    return caught.value


# --------------------------------------------------------------------------- spec


def test_every_case_gets_the_general_text_and_the_other_tasks_but_its_own(specs: Path) -> None:
    cases = {c.case_id: c for c in expand(_profile(specs), "offtask")}
    sst2, arc = cases["lora-smollm2-135m-sst2"], cases["base-smollm2-135m-arc_easy"]
    assert sst2.general_text is not None and sst2.general_text.name == "coqa_passages"
    assert [t.name for t in sst2.also_score] == ["arc_easy", "nq_open"]
    assert [t.name for t in arc.also_score] == ["nq_open"]  # not scored again on its own task
    resolved = sst2.resolved()
    assert resolved["eval"]["forgetting"] == {"task": "coqa_passages", "documents": 5, "max_tokens": 32}
    assert set(resolved["also_score"]) == {"arc_easy", "nq_open"}
    assert resolved["general_text"]["type"] == "language_modeling"


def test_a_profile_without_them_resolves_as_before(specs: Path) -> None:
    case = expand(SpecStore(specs), "smoke")[0]
    assert case.general_text is None and case.also_score == ()
    assert "general_text" not in case.resolved() and "also_score" not in case.resolved()


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ("documents: 5", "documents: 0", "eval.forgetting.documents", "at least 1"),
        ("max_tokens: 32", "max_tokens: 1", "eval.forgetting.max_tokens", "at least 2"),
        ("task: coqa_passages", "task: coqa_pasages", "eval.forgetting.task", "did you mean 'coqa_passages'"),
        ("task: coqa_passages", "task: sst2", "eval.forgetting.task", "language_modeling"),
        ("forgetting: {task", "forgetting: {tsk", "eval.forgetting.tsk", "unknown key"),
        ("[arc_easy, nq_open]", "[arc_easy, nq_opn]", "eval.also_score[1]", "did you mean 'nq_open'"),
        ("[arc_easy, nq_open]", "[arc_easy, arc_easy]", "eval.also_score", "listed twice"),
        ("[arc_easy, nq_open]", "arc_easy", "eval.also_score", "expected a list"),
    ],
)
def test_bad_settings_are_one_line_errors_naming_the_profile_and_key(
    specs: Path, old: str, new: str, key: str, words: str
) -> None:
    error = _spec_error(specs, PROFILE.replace(old, new))
    assert error.file is not None and error.file.endswith("offtask.yaml")
    assert error.key == key and words in error.expected


@pytest.mark.parametrize(
    ("gate", "key", "words"),
    [
        ("expect: {ood.boolq.accuracy: {min: 0.5}}", "expect.ood.boolq.accuracy", "does not list"),
        (
            "compare: [{metric: ood.piqa.primary, case: lora, baseline: base, must: beat}]",
            "compare[0]",
            "does not list",
        ),
    ],
)
def test_a_gate_on_a_score_the_profile_does_not_measure_is_an_error(
    specs: Path, gate: str, key: str, words: str
) -> None:
    error = _spec_error(specs, PROFILE + gate + "\n")
    assert error.key == key and words in error.expected


def test_a_forgetting_gate_needs_eval_forgetting(specs: Path) -> None:
    text = PROFILE.replace("  forgetting: {task: coqa_passages, documents: 5, max_tokens: 32}\n", "")
    error = _spec_error(specs, text + "expect: {forgetting: {max: 0.1}}\n")
    assert error.key == "expect.forgetting" and "eval.forgetting" in error.expected


def test_the_general_text_is_a_fixed_held_out_sample_of_coqa_passages(specs: Path) -> None:
    case = next(c for c in expand(_profile(specs), "offtask") if c.task.name == "sst2")
    data = load_off_task_data(case)
    assert data.general_text is not None and len(data.general_text.held_out) == 5
    assert data.general_text.train == () and data.general_text.source_size == 499
    assert all(e.prompt == "" and len(e.target) > 300 for e in data.general_text.held_out)
    # The other tasks: their held-out split, the same examples a case trained on them is scored on.
    arc = next(c for c in expand(_profile(specs), "offtask") if c.task.name == "arc_easy")
    assert data.ood["arc_easy"].held_out == load_task(arc.task, arc.data).held_out
    assert load_off_task_data(case) == data  # fixed


def test_more_documents_than_the_text_has_blame_the_key(specs: Path) -> None:
    case = next(c for c in expand(_profile(specs), "offtask") if c.task.name == "sst2")
    big = dataclasses.replace(
        case,
        eval=dataclasses.replace(
            case.eval, forgetting=dataclasses.replace(case.eval.forgetting, documents=500)
        ),
    )
    with pytest.raises(SpecError) as caught:
        load_off_task_data(big)
    assert caught.value.key == "eval.forgetting.documents" and "offtask.yaml" in str(caught.value.file)


# --------------------------------------------------------------------------- identity


def test_the_off_task_scores_change_the_case_but_not_its_training(specs: Path) -> None:
    without = PROFILE.split("eval:")[0]
    plain_case = next(c for c in expand(_profile(specs, without), "offtask") if c.case_id.startswith("lora"))
    case = next(c for c in expand(_profile(specs), "offtask") if c.case_id.startswith("lora"))
    data = load_task(case.task, case.data)
    before = identify(plain_case, "ab" * 32, data, VERSIONS)
    after = identify(case, "ab" * 32, data, VERSIONS, load_off_task_data(case).hashes())
    assert before.training_hash == after.training_hash  # a saved adapter is re-scored, not retrained
    assert before.case_hash != after.case_hash
    session = BenchmarkSession(run_dir=specs / "runs" / "r", results_dir=specs / "runs")
    planned, unplanned = session.plan(case, data, load_off_task_data(case)), session.plan(case, data)
    assert planned.identity.training_hash == unplanned.identity.training_hash
    assert planned.identity.case_hash != unplanned.identity.case_hash


# --------------------------------------------------------------------------- names and gates


def test_names_of_the_new_scores() -> None:
    assert parse_quantity("forgetting") == Quantity("general_text", "forgetting")
    assert parse_quantity("general_text.after_loss") == Quantity("general_text", "after_loss")
    ood = parse_quantity("ood.nq_open.f1")
    assert ood == Quantity("ood.nq_open", "f1") and ood.is_metric and ood.ood_task == "nq_open"
    assert ood.label == "ood.nq_open.f1" and "nq_open" in ood.words
    assert higher_is_better("forgetting") is False and figure_direction("before_loss") is False
    for bad, words in (
        ("ood.nq_open", "ood.<task>.<metric>"),
        ("ood.x.f2", "unknown metric 'f2'"),
        ("ood.x.peak_memory_bytes", "cost figure"),
    ):
        with pytest.raises(ValueError, match=re.escape(words)):
            parse_quantity(bad)


def _with_off_task(method: str, task: str, forgetting: float, arc: float, **kw: Any) -> dict[str, Any]:
    record = make_record(method, task, **kw)
    record["general_text"] = {
        "task": "coqa_passages",
        "documents": 100,
        "max_tokens": 768,
        "tokens": 35_000,
        "before_loss": 3.1,
        "after_loss": 3.1 + forgetting,
        "forgetting": forgetting,
    }
    record["metrics"]["ood.arc_easy"] = {"accuracy": arc, "accuracy_norm": arc - 0.1}
    record["spec"]["also_score"] = {
        "arc_easy": {"name": "arc_easy", "metrics": ["accuracy", "accuracy_norm"]}
    }
    return record


def test_bounds_and_rules_address_forgetting_and_other_tasks() -> None:
    base = _with_off_task("base", "squad", 0.0, 0.50)
    lora = _with_off_task("lora", "squad", 0.02, 0.45)
    full = _with_off_task("full", "squad", 0.30, 0.52)
    expect = Expect.from_spec({"forgetting": {"max": 0.1}, "ood.arc_easy.primary": {"min": 0.48}}, "p.yaml")
    messages = [str(f) for r in (base, lora, full) for f in gates.check_expect(r, expect, "p.yaml")]
    assert len(messages) == 2
    assert any("full" in m and "general-text forgetting = 0.3 is above max 0.1" in m for m in messages)
    assert any("lora" in m and "out-of-distribution arc_easy accuracy = 0.45" in m for m in messages)
    rules = Compare.from_spec(
        [
            {"metric": "ood.arc_easy.accuracy", "case": "*", "baseline": "base", "max_drop": 0.02},
            {"figure": "forgetting", "case": "*", "baseline": "base", "max_drop": 0.1},
        ],
        "p.yaml",
    )
    failures = gates.check_relative([base, lora, full], rules, "p.yaml")
    assert sorted((f.case_id.split("-")[0], f.quantity) for f in failures) == [
        ("full", "general_text.forgetting"),
        ("lora", "ood.arc_easy.accuracy"),
    ]
    # A record of a profile that did not ask for them: nothing to check, nothing fails.
    assert gates.check_expect(make_record("lora", "squad"), expect, "p.yaml") == []


def test_metric_compare_fail_compares_forgetting_and_other_tasks_with_the_baseline() -> None:
    then = [_with_off_task("base", "squad", 0.0, 0.50), _with_off_task("lora", "squad", 0.02, 0.50)]
    now = [_with_off_task("base", "squad", 0.0, 0.50), _with_off_task("lora", "squad", 0.09, 0.40)]
    tolerances = parse_tolerances("forgetting:0.05,ood.arc_easy.accuracy:0.05,ood.arc_easy.accuracy_norm:0.2")
    result = compare_to_baseline(now, then, tolerances)
    assert sorted((r.case_id.split("-")[0], r.quantity) for r in result.regressed) == [
        ("lora", "general_text.forgetting"),
        ("lora", "ood.arc_easy.accuracy"),
    ]
    assert len(result.unchanged) == 4
    assert "ood.arc_easy.accuracy" in result.format_table()
    assert not compare_to_baseline(then, then, tolerances).failed


# --------------------------------------------------------------------------- report


def test_the_report_shows_gain_forgetting_and_other_tasks_per_training_task(tmp_path: Path) -> None:
    records = [
        _with_off_task("base", "squad", 0.0, 0.50),
        _with_off_task("lora", "squad", 0.021, 0.47, held_out={"f1": 0.48}),
        _with_off_task("full", "squad", 0.35, 0.52, held_out={"f1": 0.50}),
        _with_off_task("ia3", "squad", -0.004, 0.51, held_out={"f1": 0.33}),
    ]
    out = write_report([write_run(tmp_path / "runs", "r1", records)], tmp_path / "report")
    md = (out / "summary.md").read_text()
    section = md.split("## Beyond the task")[1]
    assert "| Method | Held-out f1 (vs base) | General-text loss (base → after) | Forgetting |" in section
    assert "| full ◆ | 0.500 (+0.190) | 3.100 → 3.450 | +0.3500 | 0.520 (+0.020) |" in section
    assert "| ia3 ◆ | 0.330 (+0.020) | 3.100 → 3.096 | -0.0040 | 0.510 (+0.010) |" in section
    assert "| lora ◆ |" in section  # more gain than ia3 for less forgetting than full
    html = (out / "report.html").read_text()
    assert 'id="off-task"' in html and 'id="plot-forgetting-squad-smollm2-135m"' in html
    csv = (out / "summary.csv").read_text().splitlines()[0].split(",")
    # summary.csv names a figure with its unit when the figure's name does not say it
    assert "general_text.forgetting_nats_per_token" in csv and "ood.arc_easy.accuracy" in csv


def test_without_those_scores_the_report_has_no_such_section(tmp_path: Path) -> None:
    out = write_report([write_run(tmp_path / "runs", "r1", grid())], tmp_path / "report")
    assert "Beyond the task" not in (out / "summary.md").read_text()
    assert 'id="off-task"' not in (out / "report.html").read_text()
