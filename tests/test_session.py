"""The session's bookkeeping without training: case identity, earlier runs, adoption, re-scoring,
``--rerun``, and writes that meet a full disk.

Cases are real (``peftcore.spec.cases.expand`` over a copy of the shipped specs, task data from
``peftcore.data.tasks.load_task``); records of earlier runs are synthetic. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from peftcore import storage
from peftcore.data.example import TaskData
from peftcore.data.tasks import load_task
from peftcore.errors import SpecError
from peftcore.models.checkpoints import model_sha256
from peftcore.pipeline import execute, failures, saving
from peftcore.pipeline.identity import Identity, identify
from peftcore.pipeline.session import BenchmarkSession, Outcome, RerunPolicy, keyword_matcher
from peftcore.results import provenance
from peftcore.results.provenance import PACKAGES, Scope, package_versions
from peftcore.results.store import Earlier, History, read_record, record_path, write_record
from peftcore.spec import Case, SpecStore, expand
from peftcore.vocab.record import RECORD_FORMAT

MODEL_SHA = "ab" * 32
VERSIONS = {
    **{name: "1.0.0" for name in PACKAGES},
    "peftcore": "0.1.0+abcdef012345",
    "matplotlib": "3.9.0",  # draws the report: not part of a case's identity
}
IDS_PROFILE = """\
description: tests/test_session.py
methods: [base, lora, qlora, vblora, dora]
models: [smollm2-135m]
tasks: [sst2, arc_easy]
training: {max_steps: 2}
data: {train: 8, held_out: 8, seen: 4}
"""

Identities = dict[str, Identity]


@pytest.fixture
def grid(specs: Path) -> Callable[[], Identities]:
    """``grid()``: every case of the ``ids`` profile of the (editable) spec copy -> its identity."""
    (specs / "profiles" / "ids.yaml").write_text(IDS_PROFILE)

    def identities(versions: dict[str, str] = VERSIONS) -> Identities:
        cases = expand(SpecStore(specs), "ids")
        return {c.case_id: identify(c, MODEL_SHA, load_task(c.task, c.data), versions) for c in cases}

    return identities


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _changed(before: Identities, after: Identities) -> tuple[set[str], set[str]]:
    """(cases whose case_hash changed, cases whose training_hash changed)"""
    assert before.keys() == after.keys()
    return (
        {k for k in before if before[k].case_hash != after[k].case_hash},
        {k for k in before if before[k].training_hash != after[k].training_hash},
    )


# --------------------------------------------------------------------------- identity


def test_identity_is_stable(grid: Callable[[], Identities]) -> None:
    first, again = grid(), grid()
    assert first == again
    assert len({i.case_hash for i in first.values()}) == len(first) == 10
    assert len({i.training_hash for i in first.values()}) == 10


def test_a_method_hyperparameter_changes_exactly_that_methods_cases(
    grid: Callable[[], Identities], specs: Path
) -> None:
    before = grid()
    _edit(specs / "methods" / "lora.yaml", "  r: 32\n", "  r: 16\n")
    changed, retrained = _changed(before, grid())
    # qlora and dora are `include: lora` without a rank of their own: affected. base and vblora not.
    lora_family = {c for c in before if c.split("-")[0] in ("lora", "qlora", "dora")}
    assert changed == retrained == lora_family
    assert not any(c.startswith(("base-", "vblora-")) for c in changed)


def test_a_models_adapter_override_changes_only_that_tuners_cases(
    grid: Callable[[], Identities], specs: Path
) -> None:
    before = grid()
    _edit(
        specs / "models" / "smollm2-135m.yaml", "vblora: {vector_length: 192}", "vblora: {vector_length: 64}"
    )
    changed, retrained = _changed(before, grid())
    assert changed == retrained == {"vblora-smollm2-135m-sst2", "vblora-smollm2-135m-arc_easy"}


@pytest.mark.parametrize(
    ("file", "old", "new", "affected_task"),
    [
        ("profiles/ids.yaml", "data: {", "eval: {batch_size: 2}\ndata: {", None),
        ("profiles/ids.yaml", "data: {", "eval: {max_new_tokens: 3}\ndata: {", None),
        ("tasks/sst2.yaml", "metrics: [accuracy, macro_f1, brier_score]", "metrics: [accuracy]", "sst2"),
        ("tasks/arc_easy.yaml", "description:", "generation: {max_new_tokens: 7}\ndescription:", "arc_easy"),
        ("tasks/sst2.yaml", "description:", "expect: {held_out.accuracy: {min: 0.0}}\ndescription:", "sst2"),
    ],
    ids=["eval.batch_size", "eval.max_new_tokens", "task metrics", "task generation", "task expect"],
)
def test_an_evaluation_setting_changes_the_case_but_not_its_training(
    grid: Callable[[], Identities], specs: Path, file: str, old: str, new: str, affected_task: str | None
) -> None:
    before = grid()
    _edit(specs / file, old, new)
    changed, retrained = _changed(before, grid())
    assert changed == {c for c in before if affected_task is None or c.endswith(affected_task)}
    assert retrained == set()


@pytest.mark.parametrize(
    ("package", "scope"),
    [
        *PACKAGES.items(),
        ("peftcore", "case"),  # its code enters the training hash as the training path's fingerprint
        ("matplotlib", None),
    ],
)
def test_a_package_version_changes_the_hashes_of_its_scope(
    grid: Callable[[], Identities], package: str, scope: str | None
) -> None:
    """A training package (torch, peft, ...) retrains every case; a scoring package (evaluate,
    bert-score, ...) re-scores them; a plotting library changes nothing."""
    before = grid()
    changed, retrained = _changed(before, grid({**VERSIONS, package: VERSIONS[package] + ".post1"}))
    assert changed == (set(before) if scope is not None else set())
    assert retrained == (set(before) if scope == "training" else set())


def test_the_model_hash_changes_both_hashes(specs: Path) -> None:
    case = expand(SpecStore(specs), "smoke")[0]
    data = load_task(case.task, case.data)
    one, other = identify(case, MODEL_SHA, data, VERSIONS), identify(case, "cd" * 32, data, VERSIONS)
    assert one.case_hash != other.case_hash and one.training_hash != other.training_hash


def test_changed_training_data_changes_both_hashes(
    specs: Path, shipped_specs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    source = specs / "tasks" / "tiny.jsonl"
    shutil.copy(shipped_specs.parent / "data" / "alpaca_example.jsonl", source)
    task_yaml = (specs / "tasks" / "alpaca_example.yaml").read_text()
    (specs / "tasks" / "tiny.yaml").write_text(
        task_yaml.replace("../../data/alpaca_example.jsonl", "tiny.jsonl")
    )
    (specs / "profiles" / "tiny.yaml").write_text(
        "description: t\nmethods: [lora]\nmodels: [smollm2-135m]\ntasks: [tiny]\n"
        "data: {train: 10, held_out: 10, seen: 4}\n"
    )
    [case] = expand(SpecStore(specs), "tiny")
    before = load_task(case.task, case.data)
    base = identify(case, MODEL_SHA, before, VERSIONS)

    def edited(example_fields: Any) -> Identity:
        lines = source.read_text().splitlines()
        [index] = [
            i
            for i, line in enumerate(lines)
            if json.loads(line)["instruction"] == example_fields["instruction"]
        ]
        record = json.loads(lines[index])
        record["output"] += " (edited)"
        lines[index] = json.dumps(record)
        source.write_text("\n".join(lines) + "\n")
        return identify(case, MODEL_SHA, load_task(case.task, case.data), VERSIONS)

    train_edit = edited(before.train[-1].fields)
    assert train_edit.case_hash != base.case_hash
    assert train_edit.training_hash != base.training_hash
    # The training hash follows the examples trained on (their uids hash their content): data
    # that changes only what is scored changes only the case hash.
    scored_elsewhere = dataclasses.replace(
        before, held_out=before.held_out[1:], data_sha256="0" * 64, split_sha256="1" * 64
    )
    other = identify(case, MODEL_SHA, scored_elsewhere, VERSIONS)
    assert other.case_hash != base.case_hash
    assert other.training_hash == base.training_hash


# --------------------------------------------------------------------------- History


def _record(run_id: str, case_id: str = "lora-m-t", **over: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "format": RECORD_FORMAT,
        "run_id": run_id,
        "case_id": case_id,
        "case_hash": "c1",
        "training_hash": "t1",
        "method": case_id.split("-")[0],
        "model": "m",
        "task": "t",
        "status": "finished",
        "reason": None,
        "metrics": {"held_out": {"accuracy": 0.5}},
        "training": {"steps": 2},
        "provenance": {"finished_at": "2026-01-01T00:00:00+00:00"},
        "adapter_dir": None,
        "reused_training_from": None,
    }
    record.update(over)
    return record


def _write(results_dir: Path, record: dict[str, Any], *, adapter: bool = False) -> Path:
    run_dir = results_dir / record["run_id"]
    if adapter:
        folder = run_dir / "adapters" / record["case_id"]
        folder.mkdir(parents=True)
        (folder / "adapter_config.json").write_text("{}")
        record = {**record, "adapter_dir": f"adapters/{record['case_id']}"}
    return write_record(run_dir, record)


def test_history_keeps_the_newest_finished_record_of_each_hash(tmp_path: Path) -> None:
    # Run ids are free text: "newest" is when the record finished, not the folder's name.
    _write(tmp_path, _record("b-old", provenance={"finished_at": "2026-01-01T00:00:00+00:00"}))
    _write(tmp_path, _record("a-new", provenance={"finished_at": "2026-02-01T00:00:00+00:00"}))
    _write(tmp_path, _record("c-failed-later", status="failed", provenance={"finished_at": "2026-03-01"}))
    _write(tmp_path, _record("d-cancelled", status="cancelled", case_hash="c2", training_hash="t2"))
    _write(tmp_path, _record("e-oom", status="oom", case_hash="c3", training_hash="t3"))
    history = History.scan(tmp_path)
    assert history.by_case["c1"].run_id == "a-new"
    assert set(history.by_case) == {"c1"}  # failed, cancelled and oom records are never reused
    assert history.problems == []


def test_history_breaks_a_tie_by_run_name_and_can_exclude_a_run(tmp_path: Path) -> None:
    _write(tmp_path, _record("r1"))
    _write(tmp_path, _record("r2"))
    assert History.scan(tmp_path).by_case["c1"].run_id == "r2"
    assert History.scan(tmp_path, exclude=tmp_path / "r2").by_case["c1"].run_id == "r1"


def test_history_offers_for_rescoring_only_records_whose_adapter_exists(tmp_path: Path) -> None:
    _write(tmp_path, _record("r1", provenance={"finished_at": "2026-01-01"}), adapter=True)
    _write(tmp_path, _record("r2", provenance={"finished_at": "2026-02-01"}))  # no adapter saved
    history = History.scan(tmp_path)
    assert history.by_case["c1"].run_id == "r2"
    assert history.by_training["t1"].run_id == "r1"
    assert history.by_training["t1"].adapter() == (tmp_path / "r1" / "adapters" / "lora-m-t").resolve()


def test_history_reports_unreadable_records_and_reads_no_temp_file(tmp_path: Path) -> None:
    good = _write(tmp_path, _record("r1"))
    cases = good.parent
    (cases / "truncated.json").write_text(good.read_text()[:40])
    (cases / "older.json").write_text(json.dumps({**_record("r1", case_id="x-m-t"), "format": 0}))
    (cases / "formatless.json").write_text(json.dumps({"run_id": "r1", "case_id": "y"}))
    (cases / "list.json").write_text("[1, 2]")
    (cases / "status.json").write_text(json.dumps(_record("r1", case_id="z-m-t", status="exploded")))
    (cases / "binary.json").write_bytes(b"\xff\xfe\x00garbage")
    (cases / "odd-hash.json").write_text(json.dumps(_record("r1", case_id="w-m-t", case_hash=["x"])))
    # Writes in progress: a record's temp file and a whole run folder being moved into place.
    (cases / ".lora-m-t.json.abc123.tmp").write_text("{")
    (cases / ".lora-m-t.json").write_text("{")
    (tmp_path / ".r0-partial" / "cases").mkdir(parents=True)
    (tmp_path / ".r0-partial" / "cases" / "a.json").write_text("{")
    history = History.scan(tmp_path)
    assert set(history.by_case) == {"c1"}
    assert len(history.problems) == 6, history.problems
    text = "\n".join(history.problems)
    for name in ("truncated", "older", "formatless", "list", "status", "binary"):
        assert f"{name}.json" in text
    assert "record format 0, this peftcore reads 1" in text
    assert all(p.startswith("ignored (will rerun if needed): ") for p in history.problems)
    assert ".tmp" not in text and ".lora-m-t.json" not in text and "r0-partial" not in text


def test_history_of_a_missing_results_folder_is_empty(tmp_path: Path) -> None:
    history = History.scan(tmp_path / "nowhere")
    assert (history.by_case, history.by_training, history.problems) == ({}, {}, [])


def test_an_earlier_record_names_the_run_that_computed_and_the_run_that_trained(tmp_path: Path) -> None:
    original = Earlier(tmp_path / "r1", _record("r1"))
    adopted = Earlier(tmp_path / "r2", _record("r2", cached_from="r1"))
    rescored = Earlier(tmp_path / "r3", _record("r3", reused_training_from="r1"))
    rescored_then_adopted = Earlier(
        tmp_path / "r4", _record("r4", cached_from="r3", reused_training_from="r1")
    )
    assert [e.origin for e in (original, adopted, rescored, rescored_then_adopted)] == [
        "r1",
        "r1",
        "r3",
        "r3",
    ]
    assert {e.trained_in for e in (original, adopted, rescored, rescored_then_adopted)} == {"r1"}


# --------------------------------------------------------------------------- planning a case


@pytest.fixture
def smoke(shipped_specs: Path) -> dict[str, tuple[Case, TaskData]]:
    """The smoke profile's cases by id, each with its task data."""
    cases = expand(SpecStore(shipped_specs), "smoke")
    return {c.case_id: (c, load_task(c.task, c.data)) for c in cases}


def _identity(case: Case, data: TaskData) -> Identity:
    return identify(case, model_sha256(case.model), data, package_versions())


def _earlier_finished(results_dir: Path, run_id: str, case: Case, data: TaskData, **over: Any) -> Path:
    identity = _identity(case, data)
    record = _record(
        run_id,
        case.case_id,
        case_hash=identity.case_hash,
        training_hash=identity.training_hash,
        method=case.method.name,
        **over,
    )
    return _write(results_dir, record, adapter=case.method.is_peft)


def _session(results_dir: Path, run_id: str = "new", **kw: Any) -> BenchmarkSession:
    return BenchmarkSession(run_dir=results_dir / run_id, results_dir=results_dir, **kw)


def _no_model(case: Case) -> Any:
    raise AssertionError(f"{case.case_id}: a reused result must not load a model")


def _reuse(bench: BenchmarkSession, case: Case, data: TaskData) -> Outcome:
    """Run a case whose result the session can reuse: nothing may train or even load."""
    outcome = bench.run(case, data=lambda _: data, model=_no_model)
    assert outcome.how in ("adopted", "resumed") and outcome.error is None
    return outcome


LORA_SST2 = "lora-smollm2-135m-sst2"
BASE_SST2 = "base-smollm2-135m-sst2"


def test_plan_adopts_the_record_of_the_same_case_into_the_new_run(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    case, data = smoke[LORA_SST2]
    _earlier_finished(tmp_path, "r1", case, data)
    bench = _session(tmp_path)
    outcome = _reuse(bench, case, data)
    assert (outcome.how, outcome.reused) == ("adopted", "cached result from r1")
    adopted = read_record(record_path(bench.run_dir, case.case_id))
    assert adopted == outcome.record == bench.records[case.case_id]
    assert (adopted["run_id"], adopted["cached_from"]) == ("new", "r1")
    assert adopted["metrics"] == {"held_out": {"accuracy": 0.5}}
    # The adapter stays where it was trained; the path is relative to the new run's folder.
    assert adopted["adapter_dir"] == os.path.join("..", "r1", "adapters", case.case_id)
    assert (bench.run_dir / adopted["adapter_dir"] / "adapter_config.json").is_file()


def test_an_adopted_record_adopted_again_still_names_where_it_was_computed(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    case, data = smoke[LORA_SST2]
    _earlier_finished(tmp_path, "r1", case, data)
    _reuse(_session(tmp_path, "r2"), case, data)
    outcome = _reuse(_session(tmp_path, "r3"), case, data)
    assert outcome.reused == "cached result from r1"
    assert outcome.record["cached_from"] == "r1"
    assert (tmp_path / "r3" / outcome.record["adapter_dir"]).resolve() == (
        tmp_path / "r1" / "adapters" / case.case_id
    ).resolve()


def test_a_finished_record_already_in_this_runs_folder_is_kept_as_it_is(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    """Rerunning an interrupted run's command (same --run-id) resumes it."""
    case, data = smoke[LORA_SST2]
    path = _earlier_finished(tmp_path, "same", case, data)
    before = path.read_bytes()
    bench = _session(tmp_path, "same")
    outcome = _reuse(bench, case, data)
    assert (outcome.how, outcome.reused) == ("resumed", "cached result from same")
    assert path.read_bytes() == before
    assert bench.records[case.case_id]["run_id"] == "same"


def test_a_record_of_the_same_spec_under_another_case_id_is_adopted_under_this_one(
    shipped_specs: Path, tmp_path: Path
) -> None:
    """``--seeds 0,1`` names the seed in the case id; a single-seed run does not. Same spec."""
    store = SpecStore(shipped_specs)
    single = next(c for c in expand(store, "smoke") if c.case_id == LORA_SST2)
    seeded = next(c for c in expand(store, "smoke", seeds=[0, 1]) if c.case_id == f"{LORA_SST2}-seed0")
    data = load_task(single.task, single.data)
    assert _identity(single, data) == _identity(seeded, data)
    _earlier_finished(tmp_path, "r1", single, data)
    bench = _session(tmp_path)
    _reuse(bench, seeded, data)
    adopted = read_record(record_path(bench.run_dir, seeded.case_id))
    assert adopted["case_id"] == seeded.case_id
    assert not record_path(bench.run_dir, single.case_id).exists()


def test_rerun_forces_every_case_or_those_a_keyword_expression_matches(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    for case_id in (LORA_SST2, BASE_SST2):
        _earlier_finished(tmp_path, "r1", *smoke[case_id])
    everything = _session(tmp_path, "all", rerun=RerunPolicy(everything=True))
    for case_id in (LORA_SST2, BASE_SST2):
        plan = everything.plan(*smoke[case_id])
        assert (plan.identity, plan.earlier, plan.rescore) == (_identity(*smoke[case_id]), None, None)
    assert not (tmp_path / "all").exists()  # nothing adopted

    expression = "lora and sst2 and not qlora"
    some = _session(
        tmp_path, "some", rerun=RerunPolicy(expression=expression, matcher=keyword_matcher(expression))
    )
    lora = some.plan(*smoke[LORA_SST2])
    assert (lora.identity, lora.earlier, lora.rescore) == (_identity(*smoke[LORA_SST2]), None, None)
    assert some.plan(*smoke[BASE_SST2]).earlier is not None


def test_keyword_matcher_uses_pytests_k_grammar_over_case_id_and_spec_names(
    smoke: dict[str, tuple[Case, TaskData]],
) -> None:
    def matching(expression: str) -> set[str]:
        matcher = keyword_matcher(expression)
        return {case_id for case_id, (case, _) in smoke.items() if matcher(case)}

    # substrings, as -k matches them: "lora" is in qlora, adalora, vblora, ...
    assert matching("lora") == {c for c in smoke if "lora" in c}
    assert matching("lora and not qlora") == {c for c in smoke if "lora" in c and "qlora" not in c}
    assert matching("BASE or arc_easy") == {
        c for c in smoke if c.startswith("base-") or c.endswith("arc_easy")
    }
    assert matching("smollm2-135m") == set(smoke)
    assert matching("nothing") == set()
    with pytest.raises(Exception, match="expected"):
        keyword_matcher("lora and")


def test_when_only_scoring_changed_plan_returns_the_earlier_training_to_rescore(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    case, data = smoke[LORA_SST2]
    _earlier_finished(tmp_path, "r1", case, data)
    rescoring = dataclasses.replace(
        case, eval=dataclasses.replace(case.eval, batch_size=case.eval.batch_size + 1)
    )
    bench = _session(tmp_path)
    plan = bench.plan(rescoring, data)
    identity, reuse = plan.identity, plan.rescore
    assert plan.earlier is None
    assert identity.training_hash == _identity(case, data).training_hash
    assert identity.case_hash != _identity(case, data).case_hash
    assert reuse is not None and reuse.run_id == "r1" and reuse.trained_in == "r1"
    assert reuse.adapter() == (tmp_path / "r1" / "adapters" / case.case_id).resolve()
    assert not (tmp_path / "new").exists()
    # Not without the adapter, not when told not to, not for a method without an adapter.
    shutil.rmtree(tmp_path / "r1" / "adapters")
    assert _session(tmp_path, "other").plan(rescoring, data).rescore is None


def test_rescoring_is_off_when_the_session_says_so_and_for_the_untrained_base(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    case, data = smoke[LORA_SST2]
    base, base_data = smoke[BASE_SST2]
    _earlier_finished(tmp_path, "r1", case, data)
    _earlier_finished(tmp_path, "r1", base, base_data)
    eval_changed = dataclasses.replace(case.eval, batch_size=case.eval.batch_size + 1)
    no_reuse = _session(tmp_path, reuse_adapters=False)
    assert no_reuse.plan(dataclasses.replace(case, eval=eval_changed), data).rescore is None
    assert _session(tmp_path).plan(dataclasses.replace(base, eval=eval_changed), base_data).rescore is None


def test_a_reused_record_is_kept_in_memory_and_gated_like_a_new_one(
    smoke: dict[str, tuple[Case, TaskData]], specs: Path, tmp_path: Path
) -> None:
    case, data = smoke[LORA_SST2]
    _earlier_finished(tmp_path, "r1", case, data, metrics={"held_out": {"accuracy": 0.1}})
    ungated = _session(tmp_path, "a")
    outcome = _reuse(ungated, case, data)
    assert ungated.records[case.case_id] is outcome.record
    assert outcome.gate_failures == ()  # no profile, and sst2's task spec has no bounds
    (specs / "profiles" / "gated.yaml").write_text(
        "methods: [base, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\nexpect: {accuracy: {min: 0.35}}\n"
    )
    gated = SpecStore(specs).get("profiles", "gated")
    [failure] = _reuse(_session(tmp_path, "b", profile=gated), case, data).gate_failures
    assert failure.startswith(f"{case.case_id}: held-out accuracy = 0.1 is below min 0.35")


def test_a_deployment_variant_that_failed_to_build_fails_the_case(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    """Its rules cannot reach it (a failed variant has no row): the case itself fails."""
    case, _ = smoke[LORA_SST2]
    record = _record("r1", case.case_id)
    record["deploy"] = {
        "nf4": {"status": "failed", "reason": "quantizing: boom"},
        "merged": {"status": "not_mergeable", "reason": "virtual tokens"},
        "gguf-q8_0": {"status": "skipped", "reason": "llama-cpp-python is not installed"},
    }
    assert _session(tmp_path).gate_failures(case, record) == [
        f"{case.case_id}@nf4: the deployment variant failed: quantizing: boom"
    ]


def test_a_records_deployment_block_reaches_the_remote_store(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A case that ran is published when its record is written, and again once its deployment
    variants are in it (memory://: one mirror for the machine that ran, one for a reader).
    Training and the variants' builds are stood in for: what is tested is what gets pushed."""
    from peftcore.pipeline import deploy, session
    from peftcore.results.remote import RemoteResults

    case, data = smoke["dora-smollm2-135m-sst2"]
    assert case.deploy.variants
    identity = _identity(case, data)
    url = f"memory://peftcore-test-{tmp_path.name}/runs"
    here = RemoteResults(url, tmp_path / "here")

    def ran(case: Case, base: Any, data: TaskData, ctx: execute.CaseContext) -> execute.Executed:
        record = _record(
            ctx.run_id, case.case_id, case_hash=identity.case_hash, training_hash=identity.training_hash
        )
        _write(ctx.run_dir.parent, record, adapter=True)
        record = read_record(record_path(ctx.run_dir, case.case_id))
        ctx.keep(record)
        return execute.Executed(record)

    def built(case: Case, todo: list[Any], *args: Any) -> None:
        blocks = args[-2]
        for variant in todo:
            blocks[variant.name] = {"kind": variant.kind, "status": "finished", "metrics": {"held_out": {}}}

    monkeypatch.setattr(session, "run_case", ran)
    monkeypatch.setattr(deploy, "_build_all", built)
    bench = BenchmarkSession(run_dir=here.mirror / "r1", results_dir=here.mirror, publish=here.push)
    outcome = bench.run(case, data=lambda _: data, model=lambda _: object())  # type: ignore[arg-type,return-value]
    assert outcome.how == "ran" and outcome.error is None and outcome.gate_failures == ()
    assert sorted(outcome.record["deploy"]) == sorted(case.deploy.variants)
    assert bench.records[case.case_id] is outcome.record

    there = RemoteResults(url, tmp_path / "there")
    assert there.pull() == 1
    assert read_record(record_path(there.mirror / "r1", case.case_id))["deploy"] == outcome.record["deploy"]


# --------------------------------------------------------------------------- a full disk


def _no_space(*args: Any, **kw: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_record_write_on_a_full_disk_fails_clearly_and_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_record(tmp_path / "r1", _record("r1"))
    before = path.read_bytes()
    monkeypatch.setattr(storage.os, "fsync", _no_space)
    with pytest.raises(OSError, match=f"could not write {path}: No space left on device") as raised:
        write_record(tmp_path / "r1", _record("r1", status="failed"))
    assert raised.value.errno == errno.ENOSPC
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_a_temp_file_that_cannot_be_created_fails_clearly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage.tempfile, "mkstemp", _no_space)
    target = tmp_path / "cases" / "x.json"
    with pytest.raises(OSError, match=f"could not write {target}: No space left on device"):
        storage.atomic_write_bytes(target, b"{}")
    assert list(target.parent.iterdir()) == []


def test_an_adapter_save_on_a_full_disk_fails_clearly_and_leaves_nothing(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    case, _ = smoke[LORA_SST2]
    earlier = tmp_path / "adapters" / "other-case"
    earlier.mkdir(parents=True)

    def save_trained(model: Any, folder: Path, method: Any) -> None:
        (Path(folder) / "adapter_model.safetensors").write_bytes(b"\0" * 1000)  # a partial file
        _no_space()

    from peftcore.train import methods

    monkeypatch.setattr(methods, "save_trained", save_trained)
    target = tmp_path / "adapters" / case.case_id
    with pytest.raises(
        OSError, match=f"could not save the trained weights to {target}: No space left"
    ) as raised:
        saving.save_adapter(object(), case, tmp_path, keep_full=False)
    assert raised.value.errno == errno.ENOSPC
    assert [p.name for p in (tmp_path / "adapters").iterdir()] == ["other-case"]  # no temp folder


# --------------------------------------------------------------------------- failure classification


def test_out_of_memory_is_recognised_also_behind_a_wrapper() -> None:
    allocator = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
        "you tried to allocate 44236800 bytes. Error code 12 (Cannot allocate memory)"
    )
    assert failures.is_out_of_memory(allocator)
    assert failures.is_out_of_memory(MemoryError())
    assert failures.is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not failures.is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not failures.is_out_of_memory(RuntimeError("could not create a primitive"))  # see the probe
    # peft's failure to build an adapter is re-raised by methods.apply_method as a SpecError.
    try:
        try:
            raise allocator
        except RuntimeError:
            raise SpecError("methods/lora.yaml", "adapter", "peft could not apply lora: ...") from None
    except SpecError as wrapped:
        assert failures.is_out_of_memory(wrapped)


# --------------------------------------------------------------------------- no torch


NO_TORCH = """
import sys
from pathlib import Path
from peftcore.data.tasks import load_task
from peftcore.pipeline.session import BenchmarkSession
from peftcore.spec import SpecStore, expand

results = Path(sys.argv[2])
case = next(c for c in expand(SpecStore(sys.argv[1]), "smoke") if c.case_id == "lora-smollm2-135m-sst2")
data = load_task(case.task, case.data)
first = BenchmarkSession(run_dir=results / "r1", results_dir=results)
identity = first.plan(case, data).identity  # the model's hash, the data's, the versions
from peftcore.vocab.record import RECORD_FORMAT
from peftcore.results.store import write_record
write_record(results / "r0", {"format": RECORD_FORMAT, "run_id": "r0", "case_id": case.case_id,
    "method": "lora", "model": "smollm2-135m", "task": "sst2", "status": "finished",
    "case_hash": identity.case_hash, "training_hash": identity.training_hash, "metrics": {}})
second = BenchmarkSession(run_dir=results / "r1", results_dir=results)  # scans the runs anew
outcome = second.run(case, data=lambda c: data, model=lambda c: 1 / 0)  # adopted: no model
assert outcome.how == "adopted", outcome
heavy = [name for name in ("torch", "transformers", "peft", "bitsandbytes") if name in sys.modules]
print("heavy:", heavy)
"""


def test_planning_and_adopting_a_case_imports_no_torch(shipped_specs: Path, tmp_path: Path) -> None:
    """Checked in a fresh process: in this one, an earlier test file may have imported torch."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", NO_TORCH, str(shipped_specs), str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "heavy: []"


# --------------------------------------------------------------------------- what the identity covers


# Where each kind of module lands: the rule of peftcore.results.provenance, applied to this source.
SCOPE_EXAMPLES: dict[str, Scope] = {
    # the training stages, what they import, and the module that runs the trainer
    "train/trainer.py": "training",
    "train/distributed.py": "training",
    "data/render.py": "training",
    "models/load.py": "training",
    "spec/types.py": "training",
    "device.py": "training",
    "measure.py": "training",
    "pipeline/execute.py": "training",
    # the rest of what makes a record: scoring, metrics, deployment variants, the record
    "score/text_metrics.py": "scoring",
    "score/metric_modules/squad_f1.py": "scoring",  # an evaluate script: its folder's scope
    "score/uncertainty.py": "scoring",
    "deploy/build.py": "scoring",
    "pipeline/deploy.py": "scoring",
    "pipeline/scoring.py": "scoring",  # the case's scores: its splits, a trial's, the judge, off task
    "pipeline/case_record.py": "scoring",  # the record's assembly: figures read off the model
    "pipeline/saving.py": "scoring",  # writes the adapter folder; no weight depends on it
    "vocab/metrics.py": "scoring",  # names: imported by spec, but no weight depends on them
    "results/store.py": "scoring",
    "stats/intervals.py": "scoring",  # a split's intervals, in the record
    "stats/paired.py": "neither",  # comparisons of finished records
    # what orchestrates cases or reads finished records
    "gates/bounds.py": "neither",
    "pipeline/session.py": "neither",
    "pytest_plugin/fixtures.py": "neither",
    "pytest_plugin/hooks.py": "neither",
    "report/tables.py": "neither",
    "plan/cli.py": "neither",
    "cli.py": "neither",
    "__init__.py": "neither",
}


def test_every_source_file_of_peftcore_is_placed_by_the_rule() -> None:
    """Derived, not a hand-kept list: a module added anywhere is placed by what imports it."""
    scopes = provenance.code_scopes()
    every = {p.relative_to(provenance.PACKAGE_ROOT).as_posix() for p in provenance.PACKAGE_ROOT.rglob("*.py")}
    assert scopes.keys() == every
    assert set(scopes.values()) == {"training", "scoring", "neither"}
    assert {name: scopes[name] for name in SCOPE_EXAMPLES} == SCOPE_EXAMPLES
    # everything a training module imports is on the training path, but the vocabulary
    graph = provenance.import_graph()
    by_module = provenance.module_scopes()
    for module, imported in graph.items():
        if by_module[module] == "training" and not module.startswith("peftcore.pipeline."):
            assert all(by_module[m] == "training" or m.startswith("peftcore.vocab") for m in imported), module


def test_the_rule_reads_the_import_graph_that_import_linter_checks() -> None:
    """The runtime rule parses import statements itself (grimp is a dev tool); here the two
    graphs, and the training path grimp's graph gives, are the same."""
    grimp = pytest.importorskip("grimp")
    graph = grimp.build_graph("peftcore", cache_dir=None)
    ours = provenance.import_graph()
    assert ours.keys() == graph.modules
    assert {m: graph.find_modules_directly_imported_by(m) for m in graph.modules} == ours
    vocab = {m for m in graph.modules if m.startswith(provenance.NAMES_ONLY)}
    drivers = graph.find_modules_that_directly_import(provenance.TRAINER)
    for module in vocab:
        graph.remove_module(module)
    stages = {m for m in graph.modules if m.startswith(tuple(p + "." for p in provenance.TRAINING_STAGES))}
    stages |= set(provenance.TRAINING_STAGES)
    training = set(stages) | drivers
    for module in stages:
        training |= graph.find_upstream_modules(module)
    assert training == {m for m, scope in provenance.module_scopes().items() if scope == "training"}


@pytest.fixture
def code_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A copy of peftcore's source that the fingerprints read instead of this one: edit it."""
    copy = tmp_path / "code" / "peftcore"
    shutil.copytree(provenance.PACKAGE_ROOT, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(provenance, "PACKAGE_ROOT", copy)
    _forget_code()
    yield copy
    _forget_code()  # the next reader sees this peftcore again


def _forget_code() -> None:
    provenance._fingerprints.cache_clear()
    provenance._versions.cache_clear()


def _edit_code(copy: Path, module: str) -> None:
    path = copy / module
    path.write_text(path.read_text() + "\n# an edit\n")
    _forget_code()


@pytest.fixture(scope="module")
def lora_sst2() -> tuple[Case, TaskData]:
    """The smoke profile's LoRA case on SST-2 with its data, loaded once for the module."""
    shipped = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
    case = next(c for c in expand(SpecStore(shipped), "smoke") if c.case_id == LORA_SST2)
    return case, load_task(case.task, case.data)


@pytest.mark.parametrize(
    "module",
    [
        *("train/trainer.py", "data/render.py", "spec/types.py", "pipeline/execute.py"),
        *("score/text_metrics.py", "score/metric_modules/squad_f1.py", "vocab/metrics.py", "deploy/build.py"),
        *("gates/bounds.py", "pytest_plugin/fixtures.py", "report/tables.py"),
    ],
)
def test_editing_a_module_changes_the_hashes_its_scope_says(
    lora_sst2: tuple[Case, TaskData], code_copy: Path, module: str
) -> None:
    """Training code retrains every case; scoring code re-scores them; a gate, the plugin or the
    report changes neither hash."""
    case, data = lora_sst2
    scope = SCOPE_EXAMPLES[module]
    before = identify(case, MODEL_SHA, data, package_versions())
    _edit_code(code_copy, module)
    after = identify(case, MODEL_SHA, data, package_versions())
    assert (before.case_hash != after.case_hash) == (scope != "neither")
    assert (before.training_hash != after.training_hash) == (scope == "training")


def test_edited_scoring_code_rescores_a_finished_case_and_edited_training_code_retrains_it(
    lora_sst2: tuple[Case, TaskData], tmp_path: Path, code_copy: Path
) -> None:
    """The session's own reuse: the same code adopts the record, a metric's code edited re-scores
    the saved adapter, the trainer's edited trains again."""
    case, data = lora_sst2
    runs = tmp_path / "runs"
    _earlier_finished(runs, "r1", case, data)
    assert _session(runs).plan(case, data).earlier is not None
    _edit_code(code_copy, "gates/bounds.py")  # a gate: the record stands
    assert _session(runs).plan(case, data).earlier is not None
    _edit_code(code_copy, "score/text_metrics.py")
    plan = _session(runs).plan(case, data)
    assert plan.earlier is None and plan.rescore is not None and plan.rescore.run_id == "r1"
    _edit_code(code_copy, "train/trainer.py")
    plan = _session(runs).plan(case, data)
    assert plan.earlier is None and plan.rescore is None


def test_changing_a_module_on_the_case_path_changes_peftcores_version(tmp_path: Path) -> None:
    import subprocess
    import sys

    copy = tmp_path / "peftcore"
    shutil.copytree(Path(sys.modules["peftcore"].__file__).parent, copy)
    code = "from peftcore.results.provenance import package_versions; print(package_versions()['peftcore'])"

    def version() -> str:
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        return out.stdout.strip()

    before = version()
    (copy / "measure.py").write_text((copy / "measure.py").read_text() + "\n# a change\n")
    after_measure = version()
    (copy / "report" / "tables.py").write_text((copy / "report" / "tables.py").read_text() + "\n# a change\n")
    assert before != after_measure == version()  # the report is not on the case path


# --------------------------------------------------------------------------- failing before running


def test_a_case_whose_data_cannot_be_read_still_writes_a_one_line_record(specs: Path, tmp_path: Path) -> None:
    _edit(
        specs / "tasks" / "sst2.yaml", "path: hf_datasets/glue/sst2/validation", "path: hf_datasets/glue/nope"
    )
    case = next(c for c in expand(SpecStore(specs), "smoke") if c.case_id == LORA_SST2)
    bench = _session(tmp_path)
    outcome = bench.run(case, data=lambda c: load_task(c.task, c.data), model=_no_model)
    assert outcome.error is not None and outcome.record["status"] == "failed"
    reason = outcome.record["reason"]
    assert reason.startswith("loading the task data: ") and "hf_datasets/glue/nope" in reason
    assert "\n" not in reason
    assert read_record(record_path(bench.run_dir, case.case_id)) == outcome.record
    assert bench.records[case.case_id] is outcome.record


def test_a_case_whose_model_cannot_be_loaded_still_writes_a_record(
    smoke: dict[str, tuple[Case, TaskData]], tmp_path: Path
) -> None:
    from peftcore.errors import AssetError

    case, data = smoke[LORA_SST2]

    def missing(case: Case) -> Any:
        raise AssetError("models/x.yaml: source.path /nowhere is not a model folder (no config.json)")

    outcome = _session(tmp_path).run(case, data=lambda _: data, model=missing)
    assert outcome.record["status"] == "failed"
    assert outcome.record["reason"] == (
        "loading the model: models/x.yaml: source.path /nowhere is not a model folder (no config.json)"
    )
