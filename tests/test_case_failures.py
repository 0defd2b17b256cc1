"""Failures after training keep what training cost, in one line (issue: a full disk while saving
the adapter printed an 80-line traceback with tensor dumps, and the record lost the time)."""

from __future__ import annotations

import errno
from pathlib import Path
from types import SimpleNamespace

import pytest

from peftcore.pipeline import case_record, execute
from peftcore.train.trainer import TrainOutcome

RUST_DISK_FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


class SafetensorError(Exception):
    """What safetensors raises on a failed write (not an OSError)."""


def test_a_full_disk_while_saving_is_one_oserror_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def save_trained(model: object, folder: Path, method: object) -> None:
        (folder / "adapter_model.safetensors").write_bytes(b"half")
        raise SafetensorError(RUST_DISK_FULL)

    monkeypatch.setattr("peftcore.train.methods.save_trained", save_trained)
    case = SimpleNamespace(
        case_id="lora-smollm2-135m-sst2", method=SimpleNamespace(is_peft=True), tuning=None
    )
    with pytest.raises(OSError) as caught:
        execute.save_adapter(object(), case, tmp_path, keep_full=False)  # type: ignore[arg-type]
    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value).endswith("No space left on device")
    assert "\n" not in str(caught.value) and "lora-smollm2-135m-sst2" in str(caught.value)
    assert caught.value.__suppress_context__  # the tensors' frames are not printed
    assert not (tmp_path / "adapters" / case.case_id).exists()  # nothing half-written is kept


def test_another_save_error_is_not_taken_for_a_full_disk(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def save_trained(model: object, folder: Path, method: object) -> None:
        raise ValueError("tensors share memory")

    monkeypatch.setattr("peftcore.train.methods.save_trained", save_trained)
    case = SimpleNamespace(case_id="c", method=SimpleNamespace(is_peft=True), tuning=None)
    with pytest.raises(ValueError, match="share memory"):
        execute.save_adapter(object(), case, tmp_path, keep_full=False)  # type: ignore[arg-type]


def test_a_case_that_failed_after_training_keeps_its_training_time() -> None:
    outcome = TrainOutcome()
    outcome.steps, outcome.train_seconds, outcome.train_tokens = 5, 12.3456, 1800
    outcome.loss_curve = [(1, 3.5), (5, 2.0)]
    memory = SimpleNamespace(read=lambda: 1 << 20, method="cpu-rss-hwm")
    state = SimpleNamespace(outcome=outcome, memory=memory)
    figures = case_record.partial_training(state)  # type: ignore[arg-type]
    assert figures["train_seconds"] == 12.346 and figures["train_tokens"] == 1800
    assert figures["steps"] == 5 and figures["loss_curve"] == [[1, 3.5], [5, 2.0]]
