"""One case across processes (``training.processes`` > 1): DDP, and FSDP
(``training.parallelism: fsdp``), under torchrun, 2 CPU processes over gloo, run by the pipeline
itself (:func:`peftcore.pipeline.execute.run_case`).

The model is the tiny Llama (tests/tiny_llama.py) saved into a folder that a ``local`` model
spec points at, so every rank loads it from the spec as it would a real model; LoRA without
dropout, fp32, a constant learning rate, SST-2. One process with batch 4 and two processes with
batch 2 train on the same global batches, so their loss curves must agree to float rounding.
Faults are injected by ``tests/fault_assets/fault_rank.py``, the rank entry point with a
callback that raises or hangs at step 1.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_llama import add_tiny_model

from peftcore.pipeline.execute import CaseContext, Executed, run_case
from peftcore.pipeline.identity import Identity
from peftcore.spec import SpecStore, expand
from peftcore.spec.schema import build, plain
from peftcore.spec.types import MethodSpec, ModelSpec, TrainingBudget

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",  # peft 0.21 reads it
    "ignore:Failed to load CPU gemm_4bit_forward:UserWarning",  # bitsandbytes without `kernels`
)
pytestmark = [
    pytestmark,
    pytest.mark.slow,
]  # the real model, training or pytest sessions of it: not in the quick tier

ASSETS = Path(__file__).resolve().parent / "fault_assets"
STEPS = 8
# The same 16 examples, 4 per optimizer step, twice over (the length-grouped order of the second
# epoch too), in both runs. What differs is only the arithmetic: each rank pads its half of a
# batch to its own longest sequence, gloo sums the two halves' gradients, and the logged loss is
# the mean of the ranks' scaled losses.
LOSS_TOLERANCE = 1e-4  # measured: 9.5e-7 at most, on losses of 10.83 down to 9.87
ADAPTER_TOLERANCE = 1e-3  # relative to each saved tensor's norm
UPDATE_TOLERANCE = 1e-3  # full fine-tuning, relative to each weight's update from the base (measured: 5.7e-6)
PROFILE = """\
description: tests/test_distributed.py
methods: [{method}]
models: [tiny]
tasks: [sst2]
variants:
  lora0: {{include: lora, adapter: {{lora_dropout: 0.0}}}}
data: {{train: 16, held_out: 3, seen: 2}}
training:
  max_steps: {steps}
  batch_size: {batch_size}
  processes: {processes}
  parallelism: {parallelism}
  max_length: 48
  precision: fp32
  learning_rate: 0.002
  lr_scheduler: constant
  warmup_ratio: 0.0
  stall_timeout_seconds: {stall}
eval: {{batch_size: 4}}
"""


@pytest.fixture(scope="module")
def tiny_folder(tiny_model_folder: Path) -> Path:
    return tiny_model_folder


def _specs(
    root: Path,
    tiny_folder: Path,
    *,
    processes: int,
    batch_size: int,
    stall: int = 600,
    method: str = "lora0",
    parallelism: str = "ddp",
) -> Path:
    """A copy of the shipped specs with the tiny model and one profile, ``dist``."""
    import shutil

    specs = Path(
        shutil.copytree(Path(__file__).resolve().parents[1] / "benchmarks" / "specs", root / "specs")
    )
    add_tiny_model(specs, tiny_folder)
    (specs / "profiles" / "dist.yaml").write_text(
        PROFILE.format(
            steps=STEPS,
            batch_size=batch_size,
            processes=processes,
            stall=stall,
            method=method,
            parallelism=parallelism,
        )
    )
    return specs


def _run(root: Path, tiny_folder: Path, keep_full: bool = False, **training: Any) -> Executed:
    from peftcore.data.tasks import load_task
    from peftcore.models.load import load_base

    [case] = expand(SpecStore(_specs(root, tiny_folder, **training)), "dist")
    base = load_base(case.model, case.method.base, "cpu")
    ctx = CaseContext(
        root / "runs" / "r1", "r1", "cpu", root, Identity("c" * 64, "t" * 64), keep_full_models=keep_full
    )
    return run_case(case, base, load_task(case.task, case.data), ctx)


def _timed(
    tmp_path_factory: pytest.TempPathFactory,
    tiny_folder: Path,
    name: str,
    method: str,
    *,
    processes: int,
    batch_size: int,
    parallelism: str = "ddp",
    keep_full: bool = False,
) -> dict[str, Any]:
    """One run of the case: its record, how long it took and its run folder, under ``name``
    (``keep_full``: a fully fine-tuned model is kept in the run folder, as the adapter is)."""
    root = tmp_path_factory.mktemp(f"{method}-{parallelism}-{name}")
    start = time.perf_counter()
    executed = _run(
        root,
        tiny_folder,
        keep_full,
        processes=processes,
        batch_size=batch_size,
        method=method,
        parallelism=parallelism,
    )
    assert executed.error is None, executed.record.get("reason")
    return {
        name: dict(executed.record),
        f"{name}_seconds": time.perf_counter() - start,
        f"{name}_run_dir": root / "runs" / "r1",
    }


def _one_and_two(
    tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path, method: str, parallelism: str = "ddp"
) -> dict[str, Any]:
    """The same case in one process (batch 4) and in two (batch 2 each, ``parallelism``), and how
    long each took."""
    return {
        **_timed(tmp_path_factory, tiny_folder, "one", method, processes=1, batch_size=4),
        **_timed(
            tmp_path_factory, tiny_folder, "two", method, processes=2, batch_size=2, parallelism=parallelism
        ),
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path) -> dict[str, Any]:
    """LoRA without dropout, in one process and in two."""
    return _one_and_two(tmp_path_factory, tiny_folder, "lora0")


def _losses(record: dict[str, Any]) -> list[float]:
    return [float(loss) for _, loss in record["training"]["loss_curve"]]


def _same_curve_and_adapter(runs: dict[str, Any]) -> tuple[float, float]:
    """Asserts the two runs' loss curves and saved adapters (or whole models) agree; returns the
    largest loss difference and the largest weight difference relative to the tensor's norm."""
    one, two = runs["one"], runs["two"]
    assert one["status"] == two["status"] == "finished"
    assert [s for s, _ in two["training"]["loss_curve"]] == list(range(1, STEPS + 1))
    losses_one, losses_two = _losses(one), _losses(two)
    differences = [abs(a - b) for a, b in zip(losses_one, losses_two, strict=True)]
    print(f"\nloss, one process:   {losses_one}\nloss, two processes: {losses_two}")
    print(f"max |difference| {max(differences):.3g}")
    assert max(differences) <= LOSS_TOLERANCE, differences
    # Training did something: the loss moved far more than the runs differ.
    assert abs(losses_one[-1] - losses_one[0]) > 100 * LOSS_TOLERANCE
    # The adapters the two runs saved (and scored) agree as closely.
    from safetensors.torch import load_file

    folders = [runs[f"{name}_run_dir"] / runs[name]["adapter_dir"] for name in ("one", "two")]
    adapters = [
        {k: v for f in sorted(d.glob("*.safetensors")) for k, v in load_file(str(f)).items()} for d in folders
    ]
    assert adapters[0] and adapters[0].keys() == adapters[1].keys()
    if one["spec"]["method"]["tuner"] != "full":
        lora_b = [key for key in adapters[0] if "lora_B" in key]
        assert lora_b and any(bool(adapters[1][key].abs().max() > 0) for key in lora_b)  # trained: B left 0
    # Adam's first steps move every weight by about the learning rate whatever its gradient's
    # size, so a weight whose gradient is near 0 can move apart on rounding alone (at a learning
    # rate of 0.01, one of 2048 did, by 3.5e-4): each tensor is compared as a whole, relative to
    # its norm (measured: 8.3e-6 at most).
    relative = {key: float((adapters[1][key] - t).norm() / t.norm()) for key, t in adapters[0].items()}
    print(f"adapters: largest difference relative to the tensor's norm {max(relative.values()):.3g}")
    assert max(relative.values()) <= ADAPTER_TOLERANCE, relative
    return max(differences), max(relative.values())


def test_two_processes_follow_the_loss_curve_of_one(runs: dict[str, Any]) -> None:
    _same_curve_and_adapter(runs)


def test_fsdp_over_two_processes_follows_the_loss_curve_of_one(
    runs: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path
) -> None:
    """parallelism: fsdp, each rank holding half of every decoder layer's weights: the same
    curve as one process, and rank 0 saves the whole adapter (gathered from the shards)."""
    fsdp = _timed(
        tmp_path_factory, tiny_folder, "two", "lora0", processes=2, batch_size=2, parallelism="fsdp"
    )
    both = {**{k: v for k, v in runs.items() if k.startswith("one")}, **fsdp}
    _same_curve_and_adapter(both)
    two = fsdp["two"]
    assert two["training"]["processes"] == 2 and two["spec"]["training"]["parallelism"] == "fsdp"
    assert two["training"]["trainable_params"] == runs["one"]["training"]["trainable_params"]
    for figure in ("train_tokens", "labeled_tokens", "model_flops"):  # over every rank's share
        assert two["training"][figure] == runs["one"]["training"][figure] > 0, figure
    # Sharded: each rank held about half of the model's parameters, together all of them.
    held, total = two["training"]["parameters_held_per_rank"], two["training"]["total_params"]
    print(f"parameters held per rank {held} of {total}")
    assert len(held) == 2 and sum(held) == total and max(held) < 0.6 * total, (held, total)
    assert (
        two["metrics"]["held_out"]
        and two["metrics"]["held_out"].keys() == runs["one"]["metrics"]["held_out"].keys()
    )
    print(f"fsdp, two processes: {fsdp['two_seconds']:.1f} s (DDP: {runs['two_seconds']:.1f} s)")


def test_the_record_counts_every_rank(runs: dict[str, Any]) -> None:
    one, two = runs["one"]["training"], runs["two"]["training"]
    assert two["processes"] == 2 and "processes" not in one
    # The same 16 examples were trained on: the Trainer's real-token count is over every rank
    # (gathered), and the labeled tokens are the ranks' sum.
    assert two["steps"] == one["steps"] == STEPS
    assert two["train_tokens"] == one["train_tokens"] > 0
    assert two["labeled_tokens"] == one["labeled_tokens"] > 0
    assert two["model_flops"] == one["model_flops"]  # counted over every rank's tokens
    assert 0 < two["padded_tokens"] <= one["padded_tokens"]  # each rank pads only its half
    assert two["tokens_per_second"] == pytest.approx(two["train_tokens"] / two["train_seconds"], rel=1e-3)
    assert 0 < two["mfu"] < 1 and two["peak_flops_per_second"] > 0
    peaks = two["peak_memory_bytes_per_rank"]
    assert len(peaks) == 2 and all(p > 0 for p in peaks) and two["peak_memory_bytes"] == max(peaks)
    assert two["memory_method"] == one["memory_method"]
    assert two["trainable_params"] == one["trainable_params"] > 0
    assert two["launch_seconds"] > two["train_seconds"] > 0
    assert runs["two"]["metrics"]["held_out"] and runs["two"]["spec"]["training"]["processes"] == 2
    from peftcore.results.frame import records_frame

    frame = records_frame([runs["one"], runs["two"]])  # the report's and load_results' table
    processes = frame["training.processes"]
    assert processes.isna().tolist() == [True, False] and processes[1] == 2
    assert frame["training.launch_seconds"][1] == two["launch_seconds"]
    print(
        f"\none process: {runs['one_seconds']:.1f} s, {one['tokens_per_second']} tokens/s;"
        f" two processes: {runs['two_seconds']:.1f} s (launch {two['launch_seconds']} s),"
        f" {two['tokens_per_second']} tokens/s, peaks {peaks} (one process: {one['peak_memory_bytes']})"
    )


def test_full_fine_tuning_follows_the_loss_curve_of_one(
    tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path
) -> None:
    """Every weight trained over two processes; the session reads the whole model back."""
    runs = _one_and_two(tmp_path_factory, tiny_folder, "full")
    one, two = runs["one"]["training"], runs["two"]["training"]
    assert runs["two"]["status"] == "finished" and two["processes"] == 2
    differences = [abs(a - b) for a, b in zip(_losses(runs["one"]), _losses(runs["two"]), strict=True)]
    print(f"\nfull fine-tuning, loss, one process: {_losses(runs['one'])}")
    print(f"max |difference| {max(differences):.3g}")
    assert len(differences) == STEPS and max(differences) <= LOSS_TOLERANCE, differences
    assert two["trainable_params"] == one["trainable_params"] == one["total_params"]
    assert two["adapter_bytes"] == one["adapter_bytes"] > 0  # the whole model, saved for its size
    assert runs["two"]["adapter_dir"] is None  # not kept (keep_full_models is off)
    assert runs["two"]["metrics"]["held_out"].keys() == runs["one"]["metrics"]["held_out"].keys()


def test_full_fine_tuning_with_fsdp_follows_the_loss_curve_of_one(
    tmp_path_factory: pytest.TempPathFactory, tiny_folder: Path
) -> None:
    """Every weight trained, sharded over two processes; rank 0 saves the whole model (gathered
    from the shards), kept here in both runs to compare it weight for weight."""
    runs = {
        **_timed(tmp_path_factory, tiny_folder, "one", "full", processes=1, batch_size=4, keep_full=True),
        **_timed(
            tmp_path_factory,
            tiny_folder,
            "two",
            "full",
            processes=2,
            batch_size=2,
            parallelism="fsdp",
            keep_full=True,
        ),
    }
    _same_curve_and_adapter(runs)
    one, two = runs["one"]["training"], runs["two"]["training"]
    assert two["trainable_params"] == one["trainable_params"] == one["total_params"]
    held = two["parameters_held_per_rank"]
    print(f"parameters held per rank {held} of {two['total_params']}")
    assert len(held) == 2 and sum(held) == two["total_params"] and max(held) < 0.6 * two["total_params"]
    # Scored from weights that agree to about 1e-6: a choice may not flip, a mean may move in its
    # seventh digit (measured: Brier 0.51587286 against 0.51587303).
    assert runs["two"]["metrics"]["held_out"] == pytest.approx(runs["one"]["metrics"]["held_out"], rel=1e-5)
    # At full fine-tuning's learning rate (2e-5) 8 steps move a weight by at most about 1.6e-4, so
    # the whole weights agree whether or not the runs trained alike: their updates from the base
    # are compared instead, each relative to its norm.
    from safetensors.torch import load_file

    base = load_file(str(tiny_folder / "model.safetensors"))
    saved = [
        load_file(str(runs[f"{name}_run_dir"] / runs[name]["adapter_dir"] / "model.safetensors"))
        for name in ("one", "two")
    ]
    updates = [{key: model[key] - base[key] for key in base} for model in saved]
    assert all(float(u.norm()) > 0 for u in updates[0].values())  # every tensor trained
    relative = {key: float((updates[1][key] - u).norm() / u.norm()) for key, u in updates[0].items()}
    print(f"updates: largest difference relative to the update's norm {max(relative.values()):.3g}")
    assert max(relative.values()) <= UPDATE_TOLERANCE, relative


def test_fsdp_shards_by_the_models_decoder_layer_class() -> None:
    from types import SimpleNamespace

    from peftcore.train.trainer import fsdp_arguments

    llama: Any = SimpleNamespace(_no_split_modules=["LlamaDecoderLayer"])
    assert fsdp_arguments(llama) == {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": ["LlamaDecoderLayer"]},
    }
    with pytest.raises(ValueError, match=r"fsdp needs .* SimpleNamespace names none"):
        fsdp_arguments(SimpleNamespace(_no_split_modules=None))


def _faulty(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch, fault: str, stall: int = 600
) -> tuple[Executed, float, Path]:
    from peftcore.train import launch

    faults = tmp_path / "faults"
    faults.mkdir()
    monkeypatch.setattr(launch, "ENTRY_MODULE", "fault_rank")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(p for p in (str(ASSETS), os.environ.get("PYTHONPATH")) if p)
    )
    monkeypatch.setenv("PEFTCORE_FAULT", fault)
    monkeypatch.setenv("PEFTCORE_FAULT_RANK", "1")
    monkeypatch.setenv("PEFTCORE_FAULT_DIR", str(faults))
    start = time.perf_counter()
    executed = _run(tmp_path, tiny_folder, processes=2, batch_size=2, stall=stall)
    return executed, time.perf_counter() - start, faults


def _alive(faults: Path) -> list[int]:
    """The fault ranks' processes still running (none may outlive its case)."""
    alive = []
    for path in faults.glob("rank-*.pid"):
        pid = int(path.read_text())
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        alive.append(pid)
    return alive


def test_a_rank_that_raises_fails_the_case_with_its_error(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from peftcore.train.launch import RankFailed

    executed, seconds, faults = _faulty(tmp_path, tiny_folder, monkeypatch, "raise")
    record = executed.record
    assert record["status"] == "failed" and isinstance(executed.error, RankFailed)
    assert re.fullmatch(
        r"RankFailed: rank 1 of 2: RuntimeError: injected failure in rank 1 at step 1 \(fault_rank\.py:\d+\)",
        record["reason"],
    ), record["reason"]
    # Rank 0 logged step 1 before rank 1 raised; the record keeps it.
    assert [s for s, _ in record["training"]["loss_curve"]] == [1]
    # The ranks' logs are kept in the run folder: rank 1's stderr ends with its traceback.
    logs = tmp_path / "runs" / "r1" / "ranks" / record["case_id"]
    assert "RuntimeError: injected failure in rank 1" in (logs / "rank-1.stderr.log").read_text()
    assert {"torchrun.log", "error-1.json", "rank-0.stderr.log"} <= {p.name for p in logs.iterdir()}
    assert len(list(faults.glob("rank-*.pid"))) == 2 and _alive(faults) == []
    # The other rank was stopped by torchrun, not left to wait: no timeout was involved.
    assert seconds < 300, seconds
    print(f"\nfailed in {seconds:.1f} s: {record['reason']}")


def test_a_rank_stuck_outside_a_collective_fails_the_other_at_the_timeout(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed, seconds, faults = _faulty(tmp_path, tiny_folder, monkeypatch, "hang", stall=8)
    reason = executed.record["reason"]
    assert executed.record["status"] == "failed"
    # Rank 0 waited in the all-reduce of step 2 for the process group's timeout (8 s).
    assert reason.startswith("RankFailed: rank 0 of 2: "), reason
    assert "timed out" in reason.lower() or "timeout" in reason.lower(), reason
    assert _alive(faults) == []
    print(f"\nfailed in {seconds:.1f} s: {reason}")


def test_ranks_that_all_stall_are_killed_by_the_launcher(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed, seconds, faults = _faulty(tmp_path, tiny_folder, monkeypatch, "hang-all", stall=5)
    reason = executed.record["reason"]
    assert executed.record["status"] == "failed"
    found = re.fullmatch(
        r"RankFailed: no progress for (\d+) s \(while training; training.stall_timeout_seconds 5\); "
        r"every process was stopped",
        reason,
    )
    assert found and int(found.group(1)) >= 10, reason  # twice the timeout (5 s), then polled
    assert [s for s, _ in executed.record["training"]["loss_curve"]] == [1]
    assert len(list(faults.glob("rank-*.pid"))) == 2 and _alive(faults) == []
    print(f"\nfailed in {seconds:.1f} s: {reason}")


def test_an_interrupted_case_stops_every_process_and_is_recorded_as_cancelled(
    tmp_path: Path, tiny_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while the ranks train (here: once rank 0 has logged step 1, and every rank sleeps):
    the processes are stopped, the record says how far it got, and the interrupt goes on."""
    import json

    from peftcore.train import launch

    def interrupted_watch(proc: Any, files: launch.Scratch, stall_timeout_seconds: int) -> int:
        """Ctrl-C in the session while it waits for torchrun, once rank 0 has logged step 1."""
        while proc.poll() is None:
            try:
                if json.loads(files.progress.read_text()).get("loss_curve"):
                    raise KeyboardInterrupt
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError("torchrun ended before step 1 was logged")

    monkeypatch.setattr(launch, "_watch", interrupted_watch)
    with pytest.raises(KeyboardInterrupt):
        _faulty(tmp_path, tiny_folder, monkeypatch, "hang-all")
    [path] = (tmp_path / "runs" / "r1" / "cases").glob("*.json")
    record = json.loads(path.read_text())
    assert record["status"] == "cancelled"
    assert record["reason"] == f"interrupted during training at step 1 of {STEPS}"
    assert [s for s, _ in record["training"]["loss_curve"]] == [1]
    faults = tmp_path / "faults"
    assert len(list(faults.glob("rank-*.pid"))) == 2 and _alive(faults) == []


def test_processes_is_part_of_the_case_and_the_stall_timeout_is_not(shipped_specs: Path) -> None:
    """A case trained over two processes is another case (its numbers differ in rounding); how
    long a stalled one may wait changes nothing it measures, so it is not in the identity."""
    from types import SimpleNamespace

    from peftcore.pipeline.identity import identify

    case = next(c for c in expand(SpecStore(shipped_specs), "smoke") if c.method.name == "lora")
    data: Any = SimpleNamespace(data_sha256="d", split_sha256="s", train=())

    def identity(**training: Any) -> Identity:
        budget = dataclasses.replace(case.training, **training)
        return identify(dataclasses.replace(case, training=budget), "m", data, {})

    assert identity(stall_timeout_seconds=60) == identity()
    assert identity(processes=2).case_hash != identity().case_hash
    assert identity(processes=2).training_hash != identity().training_hash


def test_a_rank_rebuilds_the_spec_it_is_sent(shipped_specs: Path) -> None:
    """The ranks read the case's model, method and budget back from the resolved spec (JSON)."""
    import json

    store = SpecStore(shipped_specs)
    [case] = [c for c in expand(store, "smoke") if c.method.name == "lora" and c.task.name == "sst2"]
    budget = dataclasses.replace(case.training, processes=2, stall_timeout_seconds=60)
    spec = json.loads(json.dumps(dataclasses.replace(case, training=budget).resolved()))
    assert build(ModelSpec, spec["model"], None, "model") == case.model
    assert build(MethodSpec, spec["method"], None, "method") == case.method
    assert build(TrainingBudget, spec["training"], None, "training") == budget
    assert plain(budget)["processes"] == 2
