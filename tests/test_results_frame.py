"""``peftcore.load_results``: stored case records as a tidy pandas DataFrame."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from report_fixtures import grid, make_record, scored, write_run

import peftcore
from peftcore.results.frame import figure_column, record_numbers, records_frame, seed_stats
from peftcore.results.store import RunError
from peftcore.vocab.record import RecordError


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two runs: three seeds of base/lora/qlora on two tasks, one OOM case, and a later run
    that has lora on squad seed 0 again (newer)."""
    records = grid(methods=("base", "lora", "qlora"), tasks=("arc_easy", "squad"), seeds=(0, 1, 2))
    records.append(make_record("dora", "squad", seed=0, status="oom"))
    write_run(tmp_path / "runs", "r1", records)
    again = make_record(
        "lora",
        "squad",
        seed=0,
        held_out={"f1": 0.9},
        provenance={"finished_at": "2026-02-01T00:00:00"},
    )
    write_run(tmp_path / "runs", "r2", [again])
    return tmp_path / "runs"


def test_one_row_per_case_and_seed_with_typed_columns(results: Path) -> None:
    df = peftcore.load_results(results / "r1")
    assert len(df) == 3 * 2 * 3 + 1
    assert df[["method", "task", "seed"]].duplicated().sum() == 0
    assert str(df["method"].dtype) == "string" and str(df["status"].dtype) == "string"
    assert df["seed"].dtype == "int64"
    assert df["held_out.accuracy"].dtype == "float64"
    assert str(df["training.peak_memory_bytes"].dtype) == "Int64"  # an int figure, missing for base
    assert df["training.train_seconds"].dtype == "float64"
    assert str(df["provenance.finished_at"].dtype).startswith("datetime64")
    # the resolved spec, flattened into columns one can group by (lists as JSON text)
    assert df["spec.method.tuner"].tolist().count("lora") == 3 * 2 * 2 + 1
    assert json.loads(df["spec.task.metrics"].iloc[0]) == ["accuracy", "accuracy_norm"]
    assert df.groupby("spec.task.metrics").ngroups == 2
    assert "training.loss_curve" not in df.columns


def test_values_are_the_records_and_missing_is_never_zero(results: Path) -> None:
    df = peftcore.load_results(results / "r1")
    source = make_record("qlora", "arc_easy", seed=1)
    row = df[(df.case_id == source["case_id"])].iloc[0]
    assert row["held_out.accuracy"] == source["metrics"]["held_out"]["accuracy"]
    assert row["seen.accuracy_norm"] == source["metrics"]["seen"]["accuracy_norm"]
    assert row["training.peak_memory_bytes"] == source["training"]["peak_memory_bytes"]
    assert row["inference.latency_ms_per_example"] == source["inference"]["latency_ms_per_example"]
    base = df[(df.method == "base")].iloc[0]
    assert pd.isna(base["training.peak_memory_bytes"]) and pd.isna(base["training.train_seconds"])
    oom = df[df.status == "oom"].iloc[0]
    assert oom["reason"].startswith("out of memory")
    assert pd.isna(oom["held_out.f1"])  # the task's declared metric has a column, empty here


def test_units_are_in_the_names_and_in_attrs(results: Path) -> None:
    df = peftcore.load_results(results / "r1")
    assert df.attrs["units"]["training.peak_memory_bytes"] == "bytes"
    assert df.attrs["units"]["inference.latency_ms_per_example"] == "ms"
    assert df.attrs["units"]["training.tokens_per_second"] == "tokens/s"
    assert df.attrs["higher_is_better"]["held_out.accuracy"] is True
    assert df.attrs["higher_is_better"]["training.peak_memory_bytes"] is False
    # a figure whose name does not say its unit gets it
    assert figure_column("general_text", "forgetting") == "general_text.forgetting_nats_per_token"
    assert figure_column("training", "final_loss") == "training.final_loss"


def test_forgetting_and_other_tasks_have_their_columns() -> None:
    record = make_record(
        "lora",
        "squad",
        metrics={
            "held_out": {"f1": 0.4},
            "seen": {"f1": 0.5},
            "ood.arc_easy": {"accuracy": 0.41},
        },
        general_text={"task": "coqa", "before_loss": 3.1, "after_loss": 3.2, "forgetting": 0.1},
    )
    df = records_frame([record])
    assert df["ood.arc_easy.accuracy"].iloc[0] == 0.41
    assert df["general_text.forgetting_nats_per_token"].iloc[0] == 0.1
    assert df["general_text.task"].iloc[0] == "coqa"
    assert df.attrs["higher_is_better"]["general_text.forgetting_nats_per_token"] is False


def test_mean_and_std_over_seeds_are_a_groupby(results: Path) -> None:
    df = peftcore.load_results(results / "r1")
    stats = seed_stats(df[df.status == "finished"])
    values = [make_record("lora", "arc_easy", seed=s)["metrics"]["held_out"]["accuracy"] for s in (0, 1, 2)]
    lora = stats.loc[("smollm2-135m", "arc_easy", "lora"), "held_out.accuracy"]
    assert lora["mean"] == pytest.approx(statistics.fmean(values))
    assert lora["std"] == pytest.approx(statistics.stdev(values))
    assert lora["count"] == 3
    assert stats.loc[("smollm2-135m", "arc_easy", "base"), ("training.peak_memory_bytes", "count")] == 0


def test_several_runs_by_id_and_the_newest_per_case(results: Path) -> None:
    both = peftcore.load_results(["r1", "r2"], results_dir=results)
    assert len(both) == 3 * 2 * 3 + 1 + 1 and set(both.run_id) == {"r1", "r2"}
    assert len(peftcore.load_results(results)) == len(both)  # a folder of runs: all of them
    newest = peftcore.load_results(results, newest_only=True)
    assert len(newest) == 3 * 2 * 3 + 1
    lora = newest[(newest.method == "lora") & (newest.task == "squad") & (newest.seed == 0)]
    assert lora["run_id"].tolist() == ["r2"] and lora["held_out.f1"].tolist() == [0.9]


def test_bad_input_is_a_one_line_error_naming_the_file_and_key(results: Path, tmp_path: Path) -> None:
    with pytest.raises(RunError, match="no run 'nope'"):
        peftcore.load_results("nope", results_dir=results)
    bad = make_record("lora", "squad", seed=7, held_out={"f1": "high"})
    run = write_run(tmp_path / "bad", "b1", [bad])
    with pytest.raises(RecordError) as err:
        peftcore.load_results(run)
    message = str(err.value)
    assert "\n" not in message
    assert str(run / "cases" / f"{bad['case_id']}.json") in message
    assert "'metrics.held_out.f1': expected a number or null, got 'high'" in message
    (run / "cases" / "zz.json").write_text("{")
    (run / "cases" / f"{bad['case_id']}.json").unlink()
    with pytest.raises(RecordError, match=r"zz\.json: not a readable JSON record"):
        peftcore.load_results(run)
    write_run(tmp_path / "bad", "b1", [make_record("lora", "squad")])
    df = peftcore.load_results(run, skip_unreadable=True)
    assert len(df) == 1 and "zz.json" in df.attrs["problems"][0]


def test_every_metric_carries_its_standard_error_and_interval(tmp_path: Path) -> None:
    scores = [1.0] * 60 + [0.0] * 40
    new = scored(make_record("lora", "arc_easy", seed=0), {"accuracy": scores, "accuracy_norm": scores[::-1]})
    scored(new, {"accuracy": scores[:50]}, split="ood.squad")
    old = make_record("lora", "arc_easy", seed=1)  # scored before intervals were kept
    df = peftcore.load_results(write_run(tmp_path / "runs", "r", [new, old]))
    for split, metric in (("held_out", "accuracy"), ("held_out", "accuracy_norm"), ("ood.squad", "accuracy")):
        column = f"{split}.{metric}"
        interval = new["uncertainty"][split][metric]
        for field in ("stderr", "ci_low", "ci_high"):
            assert df[f"{column}.{field}"].dtype == "float64"
            assert df[f"{column}.{field}"].iloc[0] == interval[field]
            assert pd.isna(df[f"{column}.{field}"].iloc[1])  # missing, never zero
    assert df["held_out.accuracy.stderr"].iloc[0] == pytest.approx(statistics.stdev(scores) / 10)
    assert pd.isna(df["seen.accuracy.stderr"]).all()  # the seen split was not scored per example here
    columns = list(df.columns)
    at = columns.index("held_out.accuracy")
    assert columns[at : at + 4] == [
        "held_out.accuracy",
        "held_out.accuracy.stderr",
        "held_out.accuracy.ci_low",
        "held_out.accuracy.ci_high",
    ]
    # numbers about a metric, not metrics: no direction, and the trackers do not log them
    assert "held_out.accuracy.stderr" not in df.attrs["higher_is_better"]
    assert "ood.squad.accuracy.ci_low" not in df.attrs["higher_is_better"]
    assert df.attrs["higher_is_better"]["ood.squad.accuracy"] is True
    assert not any(k.endswith((".stderr", ".ci_low", ".ci_high")) for k in record_numbers(new))
    stats = seed_stats(df)  # the stderr of a row averages over the seeds that have one
    assert stats.loc[("smollm2-135m", "arc_easy", "lora"), ("held_out.accuracy.stderr", "count")] == 1


def test_a_malformed_interval_is_a_one_line_error() -> None:
    record = make_record("lora", "squad", uncertainty={"held_out": {"f1": {"stderr": "small"}}})
    with pytest.raises(RecordError, match=r"'uncertainty\.held_out\.f1\.stderr': expected a number"):
        records_frame([record])


def _trial(index: int, pruned_at_step: int | None) -> dict[str, Any]:
    """A pruned search's trial record: finished, scored on the tuning split unless it was pruned,
    its pruning block saying where it stopped."""
    record = make_record("lora", "sst2")
    record.update(
        case_id=f"lora-smollm2-135m-sst2-trial{index}",
        metrics={} if pruned_at_step is not None else {"tune": {"loss": 1.5}},
        tuning={
            "kind": "trial",
            "study": "lora-smollm2-135m-sst2",
            "index": index,
            "values": {"training.learning_rate": [3e-3, 30.0][index]},
            "pruning": {"pruner": "successive_halving", "steps": 8, "pruned_at_step": pruned_at_step},
        },
    )
    return record


def test_a_trials_row_says_the_step_the_pruner_stopped_it_at(tmp_path: Path) -> None:
    tuned = make_record("lora", "sst2", tuning={"kind": "tuned", "values": {"training.learning_rate": 3e-3}})
    tuned["case_id"] = "lora-smollm2-135m-sst2-tuned"
    run = write_run(
        tmp_path / "runs", "r", [make_record("base", "sst2"), _trial(0, None), _trial(1, 2), tuned]
    )
    df = peftcore.load_results(run, trials=True).set_index("case_id")
    column = df["tuning.pruned_at_step"]
    assert str(column.dtype) == "Int64"
    assert column["lora-smollm2-135m-sst2-trial1"] == 2
    # Ran to its last step, or is no trial: missing, never 0.
    for case in ("lora-smollm2-135m-sst2-trial0", "lora-smollm2-135m-sst2-tuned", "base-smollm2-135m-sst2"):
        assert pd.isna(column[case]), case
    # No trial pruned: the column is still there, all missing, and still a number column.
    unpruned = records_frame([_trial(0, None)], trials=True)["tuning.pruned_at_step"]
    assert str(unpruned.dtype) == "Int64" and unpruned.isna().all()
    # Without trials there is no trial row, and no column for one.
    assert "tuning.pruned_at_step" not in peftcore.load_results(run).columns


def test_importing_peftcore_does_not_import_pandas() -> None:
    import subprocess
    import sys

    code = "import sys, peftcore, peftcore.report; print('pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
