"""``precision: auto`` chosen by measurement (peftcore.device.precision_choice) and MFU against
the device's best peak (peftcore.train.flops). Figures are injected: nothing asserts this
machine's speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from peftcore import device
from peftcore.device import PRECISION_FLOPS_ENV, precision_choice, resolve_precision
from peftcore.train import flops


@pytest.fixture
def bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU with bf16 instructions: bf16 is a candidate."""
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: True)


@pytest.fixture
def measuring(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The cache in a fresh folder, no figures injected, and the measurement faked: returns the
    list of precisions measured, one entry a measurement."""
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(PRECISION_FLOPS_ENV, raising=False)
    monkeypatch.setattr(device, "_MEASURED", {})
    calls: list[str] = []

    def fake(dev: str, precision: str) -> float:
        calls.append(precision)
        return {"fp32": 3.2e11, "bf16": 1.8e11}[precision]

    monkeypatch.setattr(device, "measure_matmul_flops", fake)
    return calls


def test_bf16_faster_is_chosen(bf16_cpu: None) -> None:
    choice = precision_choice("auto", "cpu", measured={"fp32": 3.0e11, "bf16": 9.0e11})
    assert choice.precision == "bf16"
    assert choice.reason.startswith("auto: bf16, 3.00x fp32")
    assert choice.record_fields() == {
        "precision_reason": choice.reason,
        "precision_flops_per_second": {"fp32": 300_000_000_000, "bf16": 900_000_000_000},
    }


def test_bf16_slower_is_not(bf16_cpu: None) -> None:
    """A Xeon with AVX-512 BF16 and no AMX: bf16 matmuls at about half of fp32's speed."""
    choice = precision_choice("auto", "cpu", measured={"fp32": 3.26e11, "bf16": 1.8e11})
    assert choice.precision == "fp32"
    assert "bf16 is 0.55x fp32" in choice.reason


def test_a_near_tie_keeps_fp32(bf16_cpu: None) -> None:
    assert precision_choice("auto", "cpu", measured={"fp32": 3.0e11, "bf16": 3.2e11}).precision == "fp32"


def test_figures_from_the_environment(bf16_cpu: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PRECISION_FLOPS_ENV, "fp32=3e11, bf16=9e11")
    assert resolve_precision("auto", "cpu") == "bf16"
    assert precision_choice("auto", "cpu").measured_in == PRECISION_FLOPS_ENV
    monkeypatch.setenv(PRECISION_FLOPS_ENV, "fp32=fast")
    with pytest.raises(ValueError, match="expected"):
        precision_choice("auto", "cpu")


def test_an_explicit_setting_is_obeyed_unmeasured(bf16_cpu: None, measuring: list[str]) -> None:
    for setting in ("bf16", "fp16", "fp32"):
        choice = precision_choice(setting, "cpu")
        assert choice.precision == setting and choice.reason == f"precision: {setting} set in the spec"
        assert choice.record_fields() == {"precision_reason": choice.reason}
    assert measuring == []


def test_a_device_that_is_not_here_is_assumed_not_measured(measuring: list[str]) -> None:
    assert resolve_precision("auto", "cuda:7", bf16_capable=True) == "bf16"
    assert resolve_precision("auto", "cuda:7", bf16_capable=False) == "fp32"
    assert measuring == []


def test_a_cpu_without_bf16_instructions_measures_fp32_only(
    monkeypatch: pytest.MonkeyPatch, measuring: list[str]
) -> None:
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    choice = precision_choice("auto", "cpu")
    assert choice.precision == "fp32" and measuring == ["fp32"]
    assert "bf16 not measured: without AVX-512 BF16 or AMX" in choice.reason


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / "cache" / "device").glob("precision-*.json"))


def test_the_measurement_is_cached_once_and_reused(
    bf16_cpu: None, measuring: list[str], tmp_path: Path
) -> None:
    first = precision_choice("auto", "cpu")
    assert first.precision == "fp32" and first.measured_in == "measured"
    assert sorted(measuring) == ["bf16", "fp32"]
    [path] = _cache_files(tmp_path)
    data = json.loads(path.read_text())
    assert data["flops_per_second"] == {"fp32": 3.2e11, "bf16": 1.8e11}
    assert data["key"] == device.precision_cache_key("cpu")
    device._MEASURED.clear()  # a new process: read from the file, not measured again
    again = precision_choice("auto", "cpu")
    assert again.measured_in == f"cache {path}" and again.flops_per_second == first.flops_per_second
    assert len(measuring) == 2


@pytest.mark.parametrize(
    "change",
    [{"torch_threads": 999}, {"torch": "9.9.9"}, {"cpu_model": "another CPU"}],  # none this machine's
    ids=["threads", "torch-version", "cpu-model"],
)
def test_what_the_answer_depends_on_measures_again(
    bf16_cpu: None,
    measuring: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
) -> None:
    precision_choice("auto", "cpu")
    key = device.precision_cache_key
    monkeypatch.setattr(device, "precision_cache_key", lambda dev: {**key(dev), **change})
    precision_choice("auto", "cpu")
    assert len(measuring) == 4 and len(_cache_files(tmp_path)) == 2


def test_a_real_thread_count_change_changes_the_key() -> None:
    import torch

    threads = torch.get_num_threads()
    before = device.precision_cache_key("cpu")
    torch.set_num_threads(1 if threads > 1 else 2)
    try:
        after = device.precision_cache_key("cpu")
    finally:
        torch.set_num_threads(threads)
    assert device.precision_cache_file(before) != device.precision_cache_file(after)


@pytest.mark.parametrize(
    "content",
    ["{not json", '{"key": 1}', "[]", '{"flops_per_second": {"fp32": "x"}}', ""],
    ids=["broken", "no-figures", "a-list", "not-a-number", "empty"],
)
def test_a_corrupt_cache_file_is_measured_again(
    bf16_cpu: None, measuring: list[str], tmp_path: Path, content: str
) -> None:
    path = device.precision_cache_file(device.precision_cache_key("cpu"))
    path.parent.mkdir(parents=True)
    path.write_text(content)
    assert precision_choice("auto", "cpu").measured_in == "measured"
    assert len(measuring) == 2
    assert json.loads(path.read_text())["flops_per_second"]["fp32"] == 3.2e11  # rewritten whole


def test_a_cache_file_of_another_key_is_measured_again(
    bf16_cpu: None, measuring: list[str], tmp_path: Path
) -> None:
    key = device.precision_cache_key("cpu")
    path = device.precision_cache_file(key)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"key": {**key, "torch": "0.1"}, "flops_per_second": {"fp32": 1, "bf16": 9}}))
    assert precision_choice("auto", "cpu").precision == "fp32"
    assert len(measuring) == 2


def test_the_real_measurement_gives_a_positive_figure() -> None:
    """Runs the probe (fp32 only: well under a second); its speed is not asserted."""
    assert device.measure_matmul_flops("cpu", "fp32") > 0


# ---------------------------------------------------------------- MFU


def test_mfu_is_against_the_best_peak_with_the_chosen_one_beside_it() -> None:
    figures = flops.utilization_figures(1e11, {"fp32": 3.2e11, "bf16": 1.8e11}, "bf16")
    assert figures == {
        "peak_flops_per_second": 320_000_000_000,
        "peak_precision": "fp32",
        "precision_peak_flops_per_second": 180_000_000_000,
        "mfu": 0.3125,  # not 0.56: bf16 is the slow choice here
    }
    faster = flops.utilization_figures(1e11, {"fp32": 1e11, "bf16": 4e11}, "bf16")
    assert faster["peak_precision"] == "bf16" and faster["mfu"] == 0.25


def test_the_peaks_cover_every_candidate_and_the_chosen_precision(
    monkeypatch: pytest.MonkeyPatch, bf16_cpu: None
) -> None:
    measured: list[tuple[str, str]] = []

    def fake(dev: str, precision: str) -> float:
        measured.append((dev, precision))
        return 1.0

    monkeypatch.setattr(flops, "peak_matmul_flops", fake)
    assert set(flops.training_peaks("cpu", "fp32")) == {"fp32", "bf16"}
    monkeypatch.setattr(device, "cpu_has_fast_bf16", lambda: False)
    assert set(flops.training_peaks("cpu", "fp32")) == {"fp32"}
    assert set(flops.training_peaks("cpu", "fp16")) == {"fp32", "fp16"}  # explicit: measured too
