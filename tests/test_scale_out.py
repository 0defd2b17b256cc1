"""Scale-out: ``--shard K/N`` across machines into one results folder, the grid manifests the
report reads to name missing cases. Plugin behaviour runs pytest inside pytest (``pytester``)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest
from report_fixtures import grid as record_grid
from report_fixtures import read_cases, write_run
from test_plugin import INI, collected, own_grid_test, planned
from tiny_llama import add_tiny_model

from peftcore.cli import main
from peftcore.pytest_plugin.shard import partition
from peftcore.pytest_plugin.workers import parse_devices, worker_share
from peftcore.report import write_report
from peftcore.results.manifest import Shard, parse_shard, write_manifest
from peftcore.results.remote import RemoteResults
from peftcore.results.store import History, adopt, read_run


@pytest.fixture
def project(pytester: pytest.Pytester, shipped_specs: Path) -> pytest.Pytester:
    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(".ini", pytest=INI)
    return pytester


# --------------------------------------------------------------------------- the partition


def test_shards_of_the_full_grid_are_disjoint_balanced_and_cover_it(project: pytest.Pytester) -> None:
    everything = collected(project.runpytest("--collect-only", "-q", "--profile", "full"))
    assert len(everything) > 20
    parts = []
    for index in (1, 2, 3):
        result = project.runpytest(
            "--collect-only", "-q", "--profile", "full", "--shard", f"{index}/3", "--run-id", "r"
        )
        assert result.ret == pytest.ExitCode.OK
        parts.append(collected(result))
    assert sorted(case for part in parts for case in part) == sorted(
        everything
    )  # the union is the grid, nothing twice
    assert max(map(len, parts)) - min(map(len, parts)) <= 1
    again = collected(
        project.runpytest("--collect-only", "-q", "--profile", "full", "--shard", "2/3", "--run-id", "r")
    )
    assert again == parts[1]


def test_shards_split_what_k_selected(project: pytest.Pytester) -> None:
    selected = collected(project.runpytest("--collect-only", "-q", "--profile", "full", "-k", "sst2"))
    parts = [
        collected(
            project.runpytest(
                "--collect-only",
                "-q",
                "--profile",
                "full",
                "-k",
                "sst2",
                "--shard",
                f"{i}/2",
                "--run-id",
                "r",
            )
        )
        for i in (1, 2)
    ]
    assert sorted(parts[0] + parts[1]) == sorted(selected)
    assert abs(len(parts[0]) - len(parts[1])) <= 1


def test_the_partition_ignores_the_order_cases_come_in(project: pytest.Pytester) -> None:
    cases = planned(project, "full", seeds=[0, 1])
    shuffled = list(cases)
    random.Random(7).shuffle(shuffled)
    for shard in (Shard(1, 4), Shard(3, 4), Shard(4, 4)):
        assert partition(cases, shard) == partition(shuffled, shard) == partition(reversed(cases), shard)
    # Contiguous by base-model variant: 4 shards of the full grid load few variants each.
    variants = [
        {c.variant_key for c in cases if c.case_id in partition(cases, Shard(i, 4))} for i in range(1, 5)
    ]
    assert sum(map(len, variants)) <= len({c.variant_key for c in cases}) + 3


def test_more_shards_than_cases_leaves_some_empty(project: pytest.Pytester) -> None:
    cases = [c for c in planned(project, "quick") if c.task.name == "sst2"][:2]
    parts = [partition(cases, Shard(i, 3)) for i in (1, 2, 3)]
    assert sorted(map(len, parts)) == [0, 1, 1]
    assert set().union(*parts) == {c.case_id for c in cases}


@pytest.mark.parametrize("value", ["3/2", "0/2", "a/b", "2", "1/0", "-1/2", "1/2/3"])
def test_a_malformed_shard_is_a_usage_error(project: pytest.Pytester, value: str) -> None:
    result = project.runpytest("--collect-only", "-q", f"--shard={value}", "--run-id", "r")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: --shard: expected *{value}*"])


def test_a_shard_without_a_run_id_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q", "--shard", "1/2")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --shard needs --run-id*"])


def test_parse_shard() -> None:
    assert parse_shard(" 2/4 ") == Shard(2, 4)
    assert str(Shard(2, 4)) == "2/4"


# --------------------------------------------------------------------------- manifests and the report


def test_each_shard_writes_its_manifest_into_the_shared_run(project: pytest.Pytester) -> None:
    test = own_grid_test(project, "def test_case(case):\n    pass\n")
    everything = [c.case_id for c in planned(project, "smoke")]
    mine = {}
    for index in (1, 2):
        result = project.runpytest(
            test,
            "-q",
            "--profile",
            "smoke",
            "--shard",
            f"{index}/2",
            "--run-id",
            "shared",
            "--results-dir",
            "out",
        )
        assert result.ret == pytest.ExitCode.OK
        manifest = json.loads((project.path / "out" / "shared" / "grid" / f"{index}-of-2.json").read_text())
        assert manifest["shard"] == f"{index}/2"
        assert manifest["grid"] == sorted(everything)
        mine[index] = manifest["cases"]
        result.assert_outcomes(passed=len(mine[index]), deselected=len(everything) - len(mine[index]))
    assert sorted(mine[1] + mine[2]) == sorted(everything)
    assert not set(mine[1]) & set(mine[2])


def test_the_report_merges_the_shards_and_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = record_grid(methods=("base", "lora", "qlora"), tasks=("sst2",))
    ids = [r["case_id"] for r in records]
    results = tmp_path / "runs"
    # Shard 1/3 finished two cases, shard 2/3 one (so far); shard 3/3 never started.
    run_dir = write_run(results, "ci-42", records[:2])
    write_run(results, "ci-42", records[2:3])
    extra = "dora-smollm2-135m-sst2"
    write_manifest(run_dir, Shard(1, 3), [*ids, extra], ids[:2])
    write_manifest(run_dir, Shard(2, 3), [*ids, extra], ids[2:])
    out = tmp_path / "report"
    assert main(["report", "ci-42", "--results-dir", str(results), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "3 cases of ci-42" in printed
    assert f"missing 1 of the 4 cases of the grid; shard(s) not started: 3/3: {extra}" in printed
    summary = (out / "summary.md").read_text()
    assert "## Missing cases" in summary
    assert "- shard 3/3 has not started" in summary
    assert f"- {extra}: no record" in summary
    assert 'id="missing"' in (out / "report.html").read_text()


def test_a_complete_sharded_run_reports_nothing_missing(tmp_path: Path) -> None:
    records = record_grid(methods=("base", "lora"), tasks=("sst2",))
    ids = [r["case_id"] for r in records]
    run_dir = write_run(tmp_path / "runs", "r", records)
    write_manifest(run_dir, Shard(1, 2), ids, ids[:1])
    write_manifest(run_dir, Shard(2, 2), ids, ids[1:])
    out = write_report([run_dir], tmp_path / "report")
    assert "Missing cases" not in (out / "summary.md").read_text()


def test_an_unreadable_manifest_is_named_not_fatal(tmp_path: Path) -> None:
    records = record_grid(methods=("base",), tasks=("sst2",))
    run_dir = write_run(tmp_path / "runs", "r", records)
    (run_dir / "grid").mkdir()
    (run_dir / "grid" / "1-of-2.json").write_text("{not json")
    out = write_report([run_dir], tmp_path / "report")
    assert "1-of-2.json: not a readable grid manifest" in (out / "summary.md").read_text()


# --------------------------------------------------------------------------- pytest-xdist workers

# Two trained cases on a tiny budget, and a compare rule that LoRA (more trainable parameters
# than IA3) breaks: with `-n 2` the two cases run on different workers, so only the controller
# sees both.
TWO_CASES = """\
description: two cases for the xdist test, on the tiny Llama (what is tested is the scheduling)
methods: [lora, ia3]
models: [tiny]
tasks: [sst2]
training: {max_steps: 2, batch_size: 2, max_length: 64}
data: {train: 8, held_out: 8, seen: 4}
compare:
  - {figure: trainable_params, case: lora, baseline: ia3, must: below, why: "broken on purpose"}
"""


@pytest.mark.slow
def test_xdist_workers_give_the_records_of_a_serial_run(
    project: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tiny_model_folder: Path
) -> None:
    add_tiny_model(project.path / "specs", tiny_model_folder)
    (project.path / "specs" / "profiles" / "two.yaml").write_text(TWO_CASES)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the serial run computes with one thread, as each worker
    common = ["-p", "no:cacheprovider", "--profile", "two", "--benchmark-disable"]
    serial = project.runpytest_subprocess(*common, "--run-id", "serial", "--results-dir", "one/runs")
    # No --run-id: the controller names the run and every worker writes into that one folder.
    parallel = project.runpytest_subprocess(*common, "-n", "2", "-v", "--results-dir", "two/runs")
    # The rule is broken in both: on the case in the serial run, by the controller under xdist.
    assert serial.ret == parallel.ret == pytest.ExitCode.TESTS_FAILED
    parallel.stdout.fnmatch_lines(["*compare: rules broken (over all workers)*", "*lora-tiny-sst2*"])
    workers = {line.split()[0] for line in parallel.outlines if " PASSED " in line and line.startswith("[gw")}
    assert workers == {"[gw0]", "[gw1]"}, parallel.outlines
    (run_dir,) = (project.path / "two" / "runs").iterdir()  # one run folder, the workers' and controller's
    parallel.stdout.fnmatch_lines(["*peftcore cases*", f"*peftcore report: *two/{run_dir.name}*"])
    summary = (project.path / "two" / run_dir.name / "summary.csv").read_text()  # written by the controller
    assert "lora-tiny-sst2" in summary and "ia3-tiny-sst2" in summary

    one, two = (
        read_cases(project.path / "one" / "runs" / "serial"),
        read_cases(run_dir),
    )
    assert sorted(one) == sorted(two) == ["ia3-tiny-sst2", "lora-tiny-sst2"]
    for case_id in one:
        a, b = one[case_id], two[case_id]
        assert a["status"] == b["status"] == "finished"
        assert a["metrics"] == b["metrics"]
        for figure in ("trainable_params", "adapter_bytes", "steps", "loss_curve"):
            assert a["training"][figure] == b["training"][figure], figure
        assert a["case_hash"] == b["case_hash"]
        assert b["provenance"]["device"]["torch_threads"] == 1


# --------------------------------------------------------------------------- results at an fsspec URL


def _with_adapter(run_dir: Path, record: dict) -> None:
    adapter = run_dir / record["adapter_dir"]
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")


def test_records_at_a_memory_url_round_trip_between_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """memory:// lives in one process: the store layer is tested here, two mirrors standing for
    two machines."""
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    url = f"memory://peftcore-test-{tmp_path.name}/runs"
    records = record_grid(methods=("base", "lora"), tasks=("sst2",))
    ids = [r["case_id"] for r in records]
    machine_a = RemoteResults(url, tmp_path / "a")
    run_a = write_run(machine_a.mirror, "ci-7", records)
    _with_adapter(run_a, records[1])
    written: list[str] = []
    pipe_file = machine_a.fs.pipe_file
    monkeypatch.setattr(
        machine_a.fs, "pipe_file", lambda path, data: (written.append(path), pipe_file(path, data))
    )
    for record in records:
        machine_a.push(run_a, {**record, "run_id": "ci-7"})
    machine_a.push_file(write_manifest(run_a, Shard(1, 2), [*ids, "ia3-smollm2-135m-sst2"], ids))
    lora_record = next(i for i, p in enumerate(written) if p.endswith("cases/lora-smollm2-135m-sst2.json"))
    assert [p for p in written[:lora_record] if "/adapters/" in p]  # the adapter is up before its record

    machine_b = RemoteResults(url, tmp_path / "b")
    assert machine_b.pull() == 3  # two records, one manifest
    assert machine_b.pull() == 0  # nothing new
    run = read_run(machine_b.mirror / "ci-7")
    assert sorted(r["case_id"] for r in run.records) == sorted(ids)
    assert run.grid is not None and run.grid.missing == ("ia3-smollm2-135m-sst2",)

    # Machine B adopts machine A's finished record into its own run and uploads it.
    history = History.scan(machine_b.mirror)
    earlier = history.by_case[records[1]["case_hash"]]
    adopted = adopt(earlier, machine_b.mirror / "ci-8", "ci-8", records[1]["case_id"])
    machine_b.push(machine_b.mirror / "ci-8", adopted)
    assert machine_a.pull() == 1
    assert read_run(machine_a.mirror / "ci-8").records[0]["cached_from"] == "ci-7"

    # `peftcore report` reads the URL: what all shards wrote, and what is missing.
    assert main(["report", "ci-7", "--results-dir", url, "--out", str(tmp_path / "report")]) == 0
    assert "missing 1 of the 3 cases of the grid; shard(s) not started: 2/2" in capsys.readouterr().out


def test_a_file_url_is_the_local_folder(project: pytest.Pytester) -> None:
    target = project.path / "shared" / "runs"
    test = own_grid_test(
        project,
        f"from pathlib import Path\n\ndef test_case(case, peftcore_run_dir):\n"
        f"    assert peftcore_run_dir == Path({str(target)!r}) / 'r'\n",
    )
    result = project.runpytest(test, "-q", "-k", "sst2", "--run-id", "r", "--results-dir", target.as_uri())
    assert result.ret == pytest.ExitCode.OK
    assert (target / "r" / "grid" / "1-of-1.json").is_file()


def test_an_unknown_results_url_is_a_usage_error(project: pytest.Pytester) -> None:
    result = project.runpytest("--collect-only", "-q", "--results-dir", "nosuchfs://bucket/runs")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --results-dir: results location nosuchfs://bucket/runs: *"])


def test_each_worker_gets_its_own_cores_and_devices() -> None:
    shares = [worker_share(i, 4, range(8), ["0", "1", "2", "3", "4", "5", "6", "7"]) for i in range(4)]
    assert [s.cpus for s in shares] == [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert [s.threads for s in shares] == [2, 2, 2, 2]
    assert [s.devices for s in shares] == [("0", "1"), ("2", "3"), ("4", "5"), ("6", "7")]
    # More workers than cores or GPUs: one each, taken in turn.
    crowded = [worker_share(i, 3, [0, 1], ["0"]) for i in range(3)]
    assert [(s.cpus, s.threads, s.devices) for s in crowded] == [
        ((0,), 1, ("0",)),
        ((1,), 1, ("0",)),
        ((0,), 1, ("0",)),
    ]
    assert worker_share(0, 2, [0, 1], []).devices == ()
    assert parse_devices(" 0, 2 ,") == ["0", "2"]
