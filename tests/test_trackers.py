"""``training.report_to``: a real case logged to each tracker offline, read back from disk.

The case is LoRA on a tiny randomly initialised Llama (SmolLM2's real tokenizer), two steps on
SST-2, run by the pipeline itself (:func:`peftcore.pipeline.execute.run_case`). Each test reads
what the tracker wrote (event files, the wandb offline run file, the mlflow file store, trackio's
SQLite database) and checks the run's name, the spec in its config, the loss curve and the final
figures against the case's record.
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import tiny_base

from peftcore.errors import SpecError
from peftcore.models.load import LoadedBase
from peftcore.pipeline.execute import CaseContext, run_case
from peftcore.pipeline.identity import Identity
from peftcore.spec import SpecStore, expand

pytestmark = pytest.mark.filterwarnings(
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",  # peft 0.21 reads it
    "ignore:Failed to load CPU gemm_4bit_forward:UserWarning",  # bitsandbytes without `kernels`
)

PROFILE = """\
description: tests/test_trackers.py
methods: [lora]
models: [smollm2-135m]
tasks: [sst2]
data: {{train: 4, held_out: 3, seen: 2}}
training: {{max_steps: 2, batch_size: 2, max_length: 48, precision: fp32, report_to: [{tracker}]}}
eval: {{batch_size: 4}}
"""


@pytest.fixture(scope="module")
def tiny() -> LoadedBase:
    """The tiny Llama (tests/tiny_llama.py) as a loaded base variant."""
    specs = SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")
    return tiny_base(specs.get("models", "smollm2-135m"))


def _run(tracker: str, specs: Path, tiny: LoadedBase, tmp_path: Path) -> dict[str, Any]:
    from peftcore.data.tasks import load_task

    (specs / "profiles" / "trk.yaml").write_text(PROFILE.format(tracker=tracker))
    [case] = expand(SpecStore(specs), "trk")
    run_dir = tmp_path / "runs" / "r1"
    ctx = CaseContext(run_dir, "r1", "cpu", tmp_path, Identity("c" * 64, "t" * 64))
    executed = run_case(case, tiny, load_task(case.task, case.data), ctx)
    assert executed.error is None, executed.record.get("reason")
    record: dict[str, Any] = dict(executed.record)
    assert record["status"] == "finished" and len(record["training"]["loss_curve"]) == 2
    return record


def _loss(record: dict[str, Any]) -> list[tuple[int, float]]:
    return [(int(step), float(loss)) for step, loss in record["training"]["loss_curve"]]


def _finals(record: dict[str, Any]) -> dict[str, float]:
    """What every tracker must hold at the end: metrics per split and the cost figures."""
    return {
        **{f"held_out.{k}": v for k, v in record["metrics"]["held_out"].items()},
        **{f"seen.{k}": v for k, v in record["metrics"]["seen"].items()},
        "training.peak_memory_bytes": record["training"]["peak_memory_bytes"],
        "training.adapter_bytes": record["training"]["adapter_bytes"],
        "training.trainable_params": record["training"]["trainable_params"],
        "training.train_seconds": record["training"]["train_seconds"],
        "inference.latency_ms_per_example": record["inference"]["latency_ms_per_example"],
    }


@pytest.mark.slow
def test_tensorboard(specs: Path, tiny: LoadedBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    record = _run("tensorboard", specs, tiny, tmp_path)
    events = EventAccumulator(
        str(tmp_path / "runs" / "r1" / "tensorboard" / record["case_id"]), size_guidance={}
    )
    events.Reload()
    loss = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert loss == [(s, pytest.approx(v, rel=1e-6)) for s, v in _loss(record)]
    for name, value in _finals(record).items():
        [event] = events.Scalars(name)
        assert event.step == 2 and event.value == pytest.approx(value, rel=1e-6), name
    [text] = events.Tensors("peftcore/spec/text_summary")
    spec = text.tensor_proto.string_val[0].decode()
    assert '"spec.method.name": "lora"' in spec and '"spec.training.max_steps": 2' in spec


def _wandb_records(path: Path) -> list[Any]:
    """The protobuf records of a wandb offline run file (a LevelDB-style log: a 7-byte file
    header, then 32 KiB blocks of records, each with a 7-byte header of crc, length, type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B" and struct.unpack("<H", data[4:6])[0] == 0xBEE1
    out, pos, parts, block = [], 7, b"", 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if left < 7 or (kind == 0 and length == 0):  # padding at the end of a block
            pos += left
            continue
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a full record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def _items(items: Any) -> dict[str, Any]:
    """wandb's key/value items: a key with a slash is kept as ``nested_key``."""
    import json

    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


@pytest.mark.slow
def test_wandb_offline(
    specs: Path, tiny: LoadedBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import wandb  # noqa: F401  (the dev extra installs every tracker)

    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    record = _run("wandb", specs, tiny, tmp_path)
    [run_file] = (tmp_path / "wandb").glob("offline-run-*/run-*.wandb")
    records = _wandb_records(run_file)
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == record["case_id"] and run.project == "peftcore"
    config = _items(run.config.update)
    for r in records:
        if r.HasField("config"):  # the Trainer's callback adds its arguments to the config
            config.update(_items(r.config.update))
    assert config["spec.method.name"] == "lora" and config["spec.training.max_steps"] == 2
    history = [_items(r.history.item) for r in records if r.HasField("history")]
    loss = [(h["train/global_step"], h["train/loss"]) for h in history if "train/loss" in h]
    assert loss == _loss(record)
    summary: dict[str, Any] = {}
    for r in records:
        if r.HasField("summary"):
            summary.update(_items(r.summary.update))
    for name, value in _finals(record).items():
        assert summary[name] == pytest.approx(value, rel=1e-12), name
    [exit_record] = [r.exit for r in records if r.HasField("exit")]
    assert exit_record.exit_code == 0


@pytest.mark.slow
def test_mlflow_file_store(
    specs: Path, tiny: LoadedBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 asks to opt in to a file store
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    record = _run("mlflow", specs, tiny, tmp_path)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("peftcore")
    [run] = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == record["case_id"] and run.info.status == "FINISHED"
    assert run.data.params["spec.method.name"] == "lora" and run.data.params["spec.training.max_steps"] == "2"
    loss = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "loss")]
    assert loss == _loss(record)
    for name, value in _finals(record).items():
        assert run.data.metrics[name] == pytest.approx(value, rel=1e-12), name


@pytest.mark.slow
def test_trackio_local(
    specs: Path, tiny: LoadedBase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trackio  # noqa: F401

    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))
    # trackio reads TRACKIO_DIR once, at import (transformers may have imported it already)
    for name, module in list(sys.modules.items()):
        if name.startswith("trackio") and hasattr(module, "TRACKIO_DIR"):
            monkeypatch.setattr(module, "TRACKIO_DIR", tmp_path / "trackio")
    record = _run("trackio", specs, tiny, tmp_path)
    from trackio.sqlite_storage import SQLiteStorage

    assert (tmp_path / "trackio" / "peftcore.db").is_file()
    assert SQLiteStorage.get_runs("peftcore") == [record["case_id"]]
    config = SQLiteStorage.get_run_config("peftcore", record["case_id"]) or {}
    assert config["spec.method.name"] == "lora" and config["spec.training.max_steps"] == 2
    logs = SQLiteStorage.get_logs("peftcore", record["case_id"])
    # the callback logs the optimizer step as train/global_step (trackio counts its own steps)
    loss = [(row["train/global_step"], row["train/loss"]) for row in logs if "train/loss" in row]
    assert loss == _loss(record)
    finals = {k: v for row in logs for k, v in row.items() if k in _finals(record)}
    assert finals == pytest.approx(_finals(record), rel=1e-12)


@pytest.mark.parametrize("tracker", ["tensorboard", "wandb", "mlflow", "trackio"])
def test_a_tracker_that_is_not_installed_is_an_error_at_collection(
    specs: Path, tracker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == tracker else real(name, *a)
    )
    (specs / "profiles" / "trk.yaml").write_text(PROFILE.format(tracker=tracker))
    with pytest.raises(SpecError) as err:
        expand(SpecStore(specs), "trk")
    assert str(err.value) == (
        f"{specs / 'profiles' / 'trk.yaml'}: key 'training.report_to': "
        f"{tracker} is not installed (pip install 'peftcore[{tracker}]')"
    )


def test_an_unknown_tracker_is_an_error_naming_the_file(specs: Path) -> None:
    (specs / "profiles" / "trk.yaml").write_text(PROFILE.format(tracker="comet"))
    with pytest.raises(SpecError, match=r"trk\.yaml: key 'training\.report_to': unknown tracker 'comet'"):
        expand(SpecStore(specs), "trk")
