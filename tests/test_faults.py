"""Resume and fault behaviour of real benchmark runs: pytest in a subprocess, faults from outside.

Every run is ``python -m pytest specs --profile faults`` on the real default model, in a
throw-away project under tmp (a copy of peftcore, the shipped specs plus a tiny ``faults``
profile; the plugin comes from its entry point, so no conftest), with pyproject's pytest
settings, so ``filterwarnings = error`` holds in there too.
Faults are injected by ``tests/fault_assets/fault_plugin.py`` (``-p fault_plugin``) into the
cases named in ``PEFTCORE_FAULTS``; signals are sent by this process once a case is
mid-training.

A run costs tens of seconds (torch, the model, training), so the runs build on one shared
results folder, each checked by the tests after it:

    r1  lora-1 raises, lora-2 turns NaN, lora-3 runs out of memory (fp32), lora-5 hangs: SIGTERM
    r2  the same command; lora-5 hangs again: kill -9
        then: r2's lora-1 record is truncated, both base records are rewritten in format 0
    r3  the same command with r2's --run-id: resumes r2
    r4  the same command, another run id: trains nothing
    r5  lora's r changed in methods/lora.yaml: only the lora case runs
    r6  eval.batch_size changed; -k "base or lora-1 or lora-4 or lora-5" --rerun=lora-4; lora-4
        runs out of memory inside oneDNN, which stops the session

Every case of the profile: base, lora, lora-1 ... lora-5 on smollm2-135m x sst2 (in that order).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from peftcore.results.store import read_record
from peftcore.vocab.record import RecordError

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent / "fault_assets"
SUFFIX = "-smollm2-135m-sst2"
METHODS = ("base", "lora", "lora-1", "lora-2", "lora-3", "lora-4", "lora-5")
RUN_TIMEOUT_S = 1800  # the machine is shared: a busy one makes a two-step case take a minute
MODEL_COPY_BYTES = 500 << 20  # about one fresh copy of SmolLM2-135M in fp32 (538 MB)

PROFILE = """\
description: tests/test_faults.py, a tiny run of the real model with one fault per case
methods: [base, lora, lora-1, lora-2, lora-3, lora-4, lora-5]
models: [smollm2-135m]
tasks: [sst2]
variants:
  lora-1: {include: lora, description: "LoRA r=4", adapter: {r: 4, lora_alpha: 8}}
  lora-2: {include: lora, description: "LoRA r=8", adapter: {r: 8, lora_alpha: 16}}
  # fp32: an allocation in the training step fails, not oneDNN's (bf16) kernel compilation,
  # which would stop the session (that case is r6's).
  lora-3:
    include: lora
    description: "LoRA r=16, fp32, batch 8"
    adapter: {r: 16, lora_alpha: 32}
    training: {batch_size: 8, precision: fp32}
  lora-4: {include: lora, description: "LoRA r=2", adapter: {r: 2, lora_alpha: 4}}
  lora-5: {include: lora, description: "LoRA r=8, alpha 8", adapter: {r: 8, lora_alpha: 8}}
# No warmup and a large constant rate: the second step's loss depends on the first update.
training: {max_steps: 2, batch_size: 2, max_length: 64, warmup_ratio: 0.0, lr_scheduler: constant,
           learning_rate: 2.0e-3}
data: {train: 8, held_out: 4, seen: 2}
eval: {batch_size: 4}
"""


pytestmark = pytest.mark.slow  # the real model, training or pytest sessions of it: not in the quick tier


def case_id(method: str) -> str:
    return method + SUFFIX


@dataclass
class Run:
    run_id: str
    returncode: int
    output: str
    seconds: float
    run_dir: Path
    outcomes: dict[str, tuple[str, str]]  # method -> (passed | failed | skipped, message)
    applied: list[str]  # methods whose model was built from the base (trained or scored fresh)
    rss: list[int]  # resident bytes at each of those moments

    def record(self, method: str) -> dict[str, Any]:
        return read_record(self.run_dir / "cases" / f"{case_id(method)}.json")

    def record_files(self) -> list[Path]:
        return sorted((self.run_dir / "cases").iterdir())

    def ran(self) -> set[str]:
        return {m for m, (outcome, _) in self.outcomes.items() if outcome != "skipped"}


class Bench:
    """A tmp checkout that runs the real benchmark test file with the faults profile."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.specs = Path(shutil.copytree(REPO / "benchmarks" / "specs", root / "specs"))
        (self.specs / "profiles" / "faults.yaml").write_text(PROFILE)
        # The code under test, copied: others edit this checkout meanwhile, and peftcore's
        # source is part of every case's identity (an edit would rerun everything). The copy
        # comes first on PYTHONPATH, so the installed entry point loads its plugin.
        shutil.copytree(
            REPO / "peftcore", root / "src" / "peftcore", ignore=shutil.ignore_patterns("__pycache__")
        )
        self.results = root / "reports" / "runs"  # the default layout: the report goes next to it
        self.timings: list[tuple[str, float]] = []

    def start(self, label: str, run_id: str, *args: str, faults: dict[str, str] | None = None) -> Any:
        fault_dir = self.root / "faults" / label
        fault_dir.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
        env.update(
            PYTHONPATH=os.pathsep.join([str(self.root / "src"), str(ASSETS)]),
            PEFTCORE_FAULTS=json.dumps(faults or {}),
            PEFTCORE_FAULT_DIR=str(fault_dir),
        )
        command = [
            *(sys.executable, "-m", "pytest", str(self.specs), "--profile", "faults"),
            *("--specs", str(self.specs), "--results-dir", str(self.results), "--run-id", run_id),
            # pyproject's own pytest settings (strict markers and config, warnings as errors);
            # the rootdir stays here, so the session-end report is written under it.
            *("-c", str(REPO / "pyproject.toml"), f"--rootdir={self.root}"),
            *("-p", "no:cacheprovider", "-p", "fault_plugin", "--tb=short"),
            f"--junitxml={fault_dir / 'junit.xml'}",
            *args,
        ]
        log = open(fault_dir / "output.txt", "wb")  # noqa: SIM115 (closed in finish)
        proc = subprocess.Popen(command, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT)
        return _Started(label, run_id, proc, log, fault_dir, time.monotonic())

    def finish(self, started: Any, timeout: float = RUN_TIMEOUT_S) -> Run:
        try:
            started.proc.wait(timeout=max(1.0, started.t0 + timeout - time.monotonic()))
        except subprocess.TimeoutExpired:
            started.proc.kill()
            started.proc.wait()
        finally:
            started.log.close()
        seconds = time.monotonic() - started.t0
        self.timings.append((started.label, seconds))
        print(f"run {started.label} ({started.run_id}): {seconds:.1f} s, exit {started.proc.returncode}")
        memory_log = started.fault_dir / "memory.jsonl"
        lines = memory_log.read_text().splitlines() if memory_log.is_file() else []
        return Run(
            run_id=started.run_id,
            returncode=started.proc.returncode,
            output=(started.fault_dir / "output.txt").read_text(errors="replace"),
            seconds=seconds,
            run_dir=self.results / started.run_id,
            outcomes=_junit_outcomes(started.fault_dir / "junit.xml"),
            applied=[json.loads(line)["method"] for line in lines],
            rss=[json.loads(line)["rss_bytes"] for line in lines],
        )

    def run(self, label: str, run_id: str, *args: str, faults: dict[str, str] | None = None) -> Run:
        return self.finish(self.start(label, run_id, *args, faults=faults))

    def run_until_hang(self, label: str, run_id: str, method: str, signum: int, **kw: Any) -> Run:
        """Start a run whose ``method`` case hangs mid-training, then send ``signum`` from here."""
        faults = {**kw.get("faults", {}), method: "hang"}
        started = self.start(label, run_id, *kw.get("args", ()), faults=faults)
        marker = started.fault_dir / f"{method}.hang"
        deadline = started.t0 + RUN_TIMEOUT_S
        while not marker.exists():
            if started.proc.poll() is not None or time.monotonic() > deadline:
                run = self.finish(started, timeout=0)
                pytest.fail(f"{label} ended before {method} reached step 1:\n{run.output[-3000:]}")
            time.sleep(0.2)
        os.kill(started.proc.pid, signum)
        return self.finish(started)


@dataclass
class _Started:
    label: str
    run_id: str
    proc: subprocess.Popen[bytes]
    log: Any
    fault_dir: Path
    t0: float


def _junit_outcomes(path: Path) -> dict[str, tuple[str, str]]:
    if not path.is_file():
        return {}  # killed before pytest could write it
    outcomes = {}
    for case in ET.parse(path).iter("testcase"):
        name = case.get("name") or ""
        if "[" not in name:
            continue  # the case a KeyboardInterrupt stopped is written without a name
        method = name[name.index("[") + 1 : -1].removesuffix(SUFFIX)
        for tag, outcome in (("skipped", "skipped"), ("failure", "failed"), ("error", "failed")):
            found = case.find(tag)
            if found is not None:
                outcomes[method] = (outcome, found.get("message", ""))
                break
        else:
            outcomes[method] = ("passed", "")
    return outcomes


def _adapter_sha256(run_dir: Path, record: dict[str, Any]) -> str:
    folder = (run_dir / record["adapter_dir"]).resolve()
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.safetensors")):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _without(record: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in record.items() if k not in keys}


# --------------------------------------------------------------------------- the runs


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Any:
    bench = Bench(tmp_path_factory.mktemp("faults"))
    yield bench
    print("run timings: " + ", ".join(f"{label} {seconds:.0f} s" for label, seconds in bench.timings))


@pytest.fixture(scope="module")
def r1(bench: Bench) -> Run:
    """Faults in four cases; SIGTERM while lora-5 trains. Writes its report at session end."""
    return bench.run_until_hang(
        "r1",
        "r1",
        "lora-5",
        signal.SIGTERM,
        faults={"lora-1": "raise", "lora-2": "nan", "lora-3": "oom"},
    )


@pytest.fixture(scope="module")
def r2(bench: Bench, r1: Run) -> Run:
    """The same command again (the failed cases rerun); kill -9 while lora-5 trains."""
    return bench.run_until_hang("r2", "r2", "lora-5", signal.SIGKILL, args=("--no-report",))


@dataclass
class Damage:
    lora_1_record: dict[str, Any]  # r2's lora-1 before it was truncated
    lora_1_adapter_sha256: str
    report: Path  # r2's report, built while its files were damaged


@pytest.fixture(scope="module")
def damage(bench: Bench, r2: Run) -> Damage:
    """Truncate r2's lora-1 record; rewrite both base records as an older peftcore wrote them."""
    lora_1 = r2.record("lora-1")
    adapter = _adapter_sha256(r2.run_dir, lora_1)
    path = r2.run_dir / "cases" / f"{case_id('lora-1')}.json"
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # as a write without the temp-and-rename would leave it
    for run_dir in (bench.results / "r1", r2.run_dir):
        path = run_dir / "cases" / f"{case_id('base')}.json"
        record = json.loads(path.read_text())
        record["format"] = 0
        path.write_text(json.dumps(record))
    from peftcore.report.build import write_report

    report = write_report([r2.run_dir], bench.root / "reports" / "r2-damaged")
    return Damage(lora_1, adapter, report)


@pytest.fixture(scope="module")
def r3(bench: Bench, damage: Damage) -> Run:
    """The killed run's command again, same --run-id: resumes r2 in its own folder."""
    return bench.run("r3", "r2", "--no-report")


@pytest.fixture(scope="module")
def r4(bench: Bench, r3: Run) -> Run:
    """The same command once more, as a new run."""
    return bench.run("r4", "r4", "--no-report")


@pytest.fixture(scope="module")
def r5(bench: Bench, r4: Run) -> Run:
    """One hyperparameter of one method changed: lora's rank, in methods/lora.yaml."""
    path = bench.specs / "methods" / "lora.yaml"
    text = path.read_text()
    assert "  r: 32\n" in text
    path.write_text(text.replace("  r: 32\n", "  r: 16\n"))
    return bench.run("r5", "r5", "--no-report")


@pytest.fixture(scope="module")
def r6(bench: Bench, r5: Run) -> Run:
    """Only an evaluation setting changed (the profile's eval batch size); lora-4 forced to train
    again, and it runs out of memory inside oneDNN."""
    path = bench.specs / "profiles" / "faults.yaml"
    path.write_text(path.read_text().replace("eval: {batch_size: 4}", "eval: {batch_size: 2}"))
    return bench.run(
        "r6",
        "r6",
        "--no-report",
        "-k",
        "base or lora-1 or lora-4 or lora-5",
        "--rerun=lora-4",
        faults={"lora-4": "oom-onednn"},
    )


# --------------------------------------------------------------------------- r1: SIGTERM, failures, OOM


def test_sigterm_cancels_the_running_case_and_keeps_the_finished_ones(r1: Run) -> None:
    assert r1.returncode == pytest.ExitCode.INTERRUPTED, r1.output[-3000:]
    cancelled = r1.record("lora-5")
    assert cancelled["status"] == "cancelled"
    assert cancelled["reason"] == "interrupted during training at step 1 of 2"
    assert cancelled["training"]["steps"] == 1
    assert [step for step, _ in cancelled["training"]["loss_curve"]] == [1]
    assert cancelled["provenance"]["finished_at"] is not None
    assert cancelled["adapter_dir"] is None
    adapters = {p.name for p in (r1.run_dir / "adapters").iterdir()}
    assert case_id("lora-5") not in adapters
    assert all(not name.startswith(case_id("lora-5")) for name in adapters)  # temp folders are ".<id>-..."
    # Everything that finished before the signal is whole and readable.
    for method in ("base", "lora", "lora-4"):
        assert r1.record(method)["status"] == "finished"
    for method in ("lora", "lora-4"):
        assert (r1.run_dir / r1.record(method)["adapter_dir"] / "adapter_config.json").is_file()
    assert [p.name for p in r1.record_files()] == sorted(f"{case_id(m)}.json" for m in METHODS)
    assert "cancelled" in r1.output and "peftcore cases" in r1.output  # the summary still printed


def test_an_exception_and_a_nan_fail_their_case_and_the_session_goes_on(r1: Run) -> None:
    raised, diverged = r1.record("lora-1"), r1.record("lora-2")
    assert raised["status"] == "failed"
    assert raised["reason"] == "RuntimeError: injected fault in lora-1 at step 1"
    assert diverged["status"] == "failed"
    assert diverged["reason"] == "training diverged at step 1: loss is nan"
    [[step, loss]] = diverged["training"]["loss_curve"]
    assert step == 1 and math.isnan(loss)
    assert raised["metrics"] == {} and diverged["metrics"] == {}
    assert r1.outcomes["lora-1"][0] == r1.outcomes["lora-2"][0] == "failed"
    assert r1.outcomes["lora-4"] == ("passed", "")  # later cases ran


def test_out_of_memory_is_recorded_released_and_the_next_case_runs(r1: Run) -> None:
    oom = r1.record("lora-3")
    assert oom["status"] == "oom", oom["reason"]
    reason = oom["reason"]
    assert reason.startswith("out of memory during training, ")
    assert "can't allocate memory" in reason  # what torch raised, named
    for hint in ("smaller batch_size", "gradient_checkpointing: true", "quantized base"):
        assert hint in reason
    assert "session stops" not in reason  # an allocator failure leaves the process usable
    assert oom["training"]["peak_memory_bytes"] > 0
    assert f"{oom['training']['peak_memory_bytes']:,} bytes above" in reason
    assert oom["training"]["steps"] == 0
    assert oom["adapter_dir"] is None
    after = r1.record("lora-4")
    assert after["status"] == "finished"
    assert after["training"]["steps"] == 2
    # Resident memory when each case's method is applied (its own fresh copy of the model made):
    # had the OOM case's model stayed alive, lora-4 would start a model copy higher.
    rss = dict(zip(r1.applied, r1.rss, strict=True))
    assert r1.applied == ["base", "lora", "lora-1", "lora-2", "lora-3", "lora-4", "lora-5"]
    assert rss["lora-4"] - rss["lora-3"] < MODEL_COPY_BYTES // 2, rss


def test_the_session_end_report_lists_failed_cases_apart_never_as_zeros(r1: Run, bench: Bench) -> None:
    out = bench.root / "reports" / "r1"
    assert f"peftcore report: {out}" in r1.output
    summary = (out / "summary.md").read_text()
    main, _, failed = summary.partition("## Failed cases")
    assert failed, summary
    for method, status in (
        ("lora-1", "failed"),
        ("lora-2", "failed"),
        ("lora-3", "oom"),
        ("lora-5", "cancelled"),
    ):
        assert f"| {case_id(method)} | {status} |" in failed
        assert f"| {method} " not in main and f"| {method} ◆" not in main
    assert "| lora-4 " in main or "| lora-4 ◆" in main
    with (out / "summary.csv").open(newline="") as handle:
        rows = {row["case_id"]: row for row in csv.DictReader(handle)}
    for method in ("lora-1", "lora-2", "lora-3", "lora-5"):
        assert rows[case_id(method)]["held_out.accuracy"] == ""  # no metric, not a zero
    assert float(rows[case_id("lora-4")]["held_out.accuracy"]) >= 0


# --------------------------------------------------------------------------- r2: kill -9


def test_kill_9_leaves_every_written_record_whole(r1: Run, r2: Run) -> None:
    assert r2.returncode == -signal.SIGKILL
    for run in (r1, r2):
        for path in run.record_files():
            if not path.name.startswith("."):
                read_record(path)  # raises on a damaged file
    written = {p.name.removesuffix(f"{SUFFIX}.json") for p in r2.record_files() if not p.name.startswith(".")}
    assert written == {"base", "lora", "lora-1", "lora-2", "lora-3", "lora-4"}
    for method in written:
        assert r2.record(method)["status"] == "finished"
    assert r2.record("lora")["cached_from"] == "r1"  # adopted
    assert r2.record("lora-1").get("cached_from") is None  # trained here: failed in r1
    # No record anywhere claims the killed case finished.
    assert r1.record("lora-5")["status"] == "cancelled"
    assert r2.applied[-1] == "lora-5"


def test_a_report_of_damaged_records_lists_them_and_does_not_crash(damage: Damage) -> None:
    summary = (damage.report / "summary.md").read_text()
    problems = summary.partition("## Record files that could not be read")[2]
    assert f"{case_id('lora-1')}.json: not a readable JSON record" in problems
    assert f"{case_id('base')}.json: record format 0, this peftcore reads 1" in problems


# --------------------------------------------------------------------------- r3: resume


def test_rerunning_the_killed_command_resumes_it(r3: Run) -> None:
    assert r3.returncode == pytest.ExitCode.OK, r3.output[-3000:]
    assert r3.run_dir.name == "r2"
    assert r3.outcomes == {
        "base": ("passed", ""),  # its records are of an older format
        "lora": ("skipped", "cached result from r1"),
        "lora-1": ("passed", ""),  # its record was truncated
        "lora-2": ("skipped", "cached result from r2"),
        "lora-3": ("skipped", "cached result from r2"),
        "lora-4": ("skipped", "cached result from r1"),
        "lora-5": ("passed", ""),  # killed in r2, cancelled in r1
    }
    assert r3.applied == ["base", "lora-1", "lora-5"]
    for method in METHODS:
        assert r3.record(method)["status"] == "finished"
    assert r3.record("lora-5")["training"]["steps"] == 2
    assert r3.record("lora-5").get("cached_from") is None


def test_damaged_earlier_records_are_reported_and_ignored(r3: Run, bench: Bench) -> None:
    problems = [line for line in r3.output.splitlines() if line.startswith("earlier record ignored")]
    assert len(problems) == 3, r3.output[-3000:]
    assert any(f"r1/cases/{case_id('base')}.json: record format 0" in line for line in problems)
    assert any(f"r2/cases/{case_id('base')}.json: record format 0" in line for line in problems)
    assert any(f"r2/cases/{case_id('lora-1')}.json: not a readable JSON record" in line for line in problems)


def test_the_same_case_twice_gives_the_same_curve_metrics_and_weights(r3: Run, damage: Damage) -> None:
    first, second = damage.lora_1_record, r3.record("lora-1")
    assert first["case_hash"] == second["case_hash"]
    curve = second["training"]["loss_curve"]
    assert len(curve) == 2 and curve[0][1] != curve[1][1]  # the first step changed the model
    assert first["training"]["loss_curve"] == curve
    assert first["metrics"] == second["metrics"]
    assert first["predictions"] == second["predictions"]
    assert damage.lora_1_adapter_sha256 == _adapter_sha256(r3.run_dir, second)


# --------------------------------------------------------------------------- r4: the same command again


def test_the_same_command_again_trains_nothing(r3: Run, r4: Run) -> None:
    assert r4.returncode == pytest.ExitCode.OK, r4.output[-3000:]
    assert {m: outcome for m, (outcome, _) in r4.outcomes.items()} == dict.fromkeys(METHODS, "skipped")
    assert all(message.startswith("cached result from r") for _, message in r4.outcomes.values())
    assert r4.applied == []
    assert not (r4.run_dir / "adapters").exists()
    for method in METHODS:
        earlier, now = r3.record(method), r4.record(method)
        assert now["run_id"] == "r4"
        assert now["cached_from"] == (earlier.get("cached_from") or "r2")
        assert _without(now, "run_id", "cached_from", "adapter_dir") == _without(
            earlier, "run_id", "cached_from", "adapter_dir"
        )
        if earlier["adapter_dir"] is None:
            assert now["adapter_dir"] is None
        else:
            assert (r4.run_dir / now["adapter_dir"]).resolve() == (
                r3.run_dir / earlier["adapter_dir"]
            ).resolve()


# --------------------------------------------------------------------------- r5, r6: what a change reruns


def test_a_changed_method_hyperparameter_reruns_exactly_its_cases(r4: Run, r5: Run) -> None:
    assert r5.returncode == pytest.ExitCode.OK, r5.output[-3000:]
    assert r5.ran() == {"lora"}
    assert r5.applied == ["lora"]
    lora = r5.record("lora")
    assert lora["spec"]["method"]["adapter"]["r"] == 16
    assert lora.get("cached_from") is None and lora["reused_training_from"] is None
    assert lora["training_hash"] != r4.record("lora")["training_hash"]
    for method in set(METHODS) - {"lora"}:  # the variants set r themselves
        assert r5.record(method)["case_hash"] == r4.record(method)["case_hash"]


def test_an_evaluation_setting_rescores_the_earlier_adapter(r5: Run, r6: Run) -> None:
    rescored, earlier = r6.record("lora-1"), r5.record("lora-1")
    assert r6.outcomes["lora-1"] == ("passed", "")
    assert rescored["spec"]["eval"]["batch_size"] == 2
    assert rescored["case_hash"] != earlier["case_hash"]
    assert rescored["training_hash"] == earlier["training_hash"]
    assert rescored["reused_training_from"] == "r2"  # trained by r3, which resumed r2
    assert rescored.get("cached_from") is None
    assert rescored["training"]["loss_curve"] == earlier["training"]["loss_curve"]
    # The reloaded adapter is frozen; the record keeps what trained (it said 0 before).
    assert rescored["training"]["trainable_params"] == earlier["training"]["trainable_params"] > 0
    assert (r6.run_dir / rescored["adapter_dir"]).resolve() == (r5.run_dir / earlier["adapter_dir"]).resolve()
    assert set(rescored["metrics"]) == {"held_out", "seen"}
    assert "lora-1" not in r6.applied  # loaded from the adapter, not trained
    base = r6.record("base")
    assert base["status"] == "finished" and base["reused_training_from"] is None


def test_out_of_memory_inside_onednn_stops_the_session_and_says_why(r6: Run) -> None:
    assert r6.returncode == pytest.ExitCode.INTERRUPTED, r6.output[-3000:]
    oom = r6.record("lora-4")  # forced by --rerun=lora-4
    assert oom["status"] == "oom", oom["reason"]
    assert "could not create a primitive" in oom["reason"]
    assert "this process can no longer build CPU kernels" in oom["reason"]
    assert "run the same command again" in oom["reason"]
    assert "Interrupted: lora-4-smollm2-135m-sst2 ran out of memory inside oneDNN" in r6.output
    assert "lora-5" not in r6.outcomes  # not run: this process could not have run it
    assert not (r6.run_dir / "cases" / f"{case_id('lora-5')}.json").exists()
    assert r6.applied == ["base", "lora-4"]


def test_every_record_file_of_every_run_parses_or_is_a_known_damage(bench: Bench, r6: Run) -> None:
    damaged = {bench.results / "r1" / "cases" / f"{case_id('base')}.json"}
    for path in sorted(bench.results.glob("*/cases/*")):
        assert not path.name.startswith("."), f"temp file left behind: {path}"
        if path in damaged:
            with pytest.raises(RecordError):
                read_record(path)
        else:
            read_record(path)


# --------------------------------------------------------------------------- in this process


def test_what_torch_raises_when_memory_runs_out_is_recognised() -> None:
    import torch

    from peftcore.pipeline.failures import cpu_kernels_broken, is_out_of_memory

    with pytest.raises(RuntimeError, match="DefaultCPUAllocator: can't allocate memory") as refused:
        torch.empty(1 << 50, dtype=torch.uint8)  # a PiB: more than any address space holds
    assert is_out_of_memory(refused.value)
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert is_out_of_memory(MemoryError())
    assert cpu_kernels_broken() is None  # this process's oneDNN is fine: the probe says so
