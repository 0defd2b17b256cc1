"""``peftcore estimate``: exact counts checked against the real default model, the memory model's
invariants (hypothesis), the method ladder, and one-line errors with exit status 2.

The exact checks load SmolLM2-135M from the local converted cache three times (fp32, NF4 with
double quantization, int8), apply every method spec for real with ``apply_method`` on
``loaded.fresh()``, save it with ``save_pretrained`` and compare with the prediction made from the
config alone on the meta device.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftcore import planner
from peftcore.cli import main
from peftcore.errors import PeftcoreError
from peftcore.specs import BaseOptions, MethodSpec, SpecStore, TrainingBudget

# Importing bitsandbytes (through peft) on a CPU machine without the `kernels` package warns once
# that it falls back to its slower CPU 4-bit kernel; nothing to act on here.
pytestmark = pytest.mark.filterwarnings("ignore:Failed to load CPU gemm_4bit_forward:UserWarning")

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
STORE = SpecStore(SPECS)
METHODS = STORE.names("methods")
MODEL = "smollm2-135m"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model_spec() -> Any:
    return STORE.get("models", MODEL)


@pytest.fixture(scope="module")
def bases(model_spec: Any) -> Any:
    """The real model, loaded once per base variant the method specs use."""
    from peftcore.models import load_base

    loaded: dict[BaseOptions, Any] = {}

    def get(options: BaseOptions) -> Any:
        if options not in loaded:
            loaded[options] = load_base(model_spec, options, "cpu")
        return loaded[options]

    return get


@pytest.fixture(scope="module")
def model_info(model_spec: Any) -> planner.ModelInfo:
    return planner.resolve_model(MODEL, SPECS)


def _method(name: str, model_spec: Any) -> MethodSpec:
    from peftcore.cases import _apply_model_overrides

    return _apply_model_overrides(STORE.get("methods", name), model_spec)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


# --------------------------------------------------------------------------- exact against the real model


@pytest.mark.parametrize("name", METHODS)
def test_counts_and_adapter_size_match_the_real_model(
    name: str, model_spec: Any, model_info: planner.ModelInfo, bases: Any, tmp_path: Path
) -> None:
    from peftcore.methods import apply_method, parameter_counts

    method = _method(name, model_spec)
    budget = TrainingBudget()
    predicted = planner.estimate(
        model_info.config, method, budget, model_name=MODEL, dtype=model_spec.dtype,
        adapter_overrides=model_spec.adapter_overrides,
    )
    model = apply_method(bases(method.base).fresh(), method, budget)
    trainable, total = parameter_counts(model)
    assert (predicted.trainable_params, predicted.total_params) == (trainable, total)
    if method.trains:
        model.save_pretrained(tmp_path)
    assert predicted.adapter_bytes == _weights_bytes(tmp_path)
    assert dict(predicted.adapter_files) == {p.name: p.stat().st_size for p in tmp_path.glob("*.safetensors")}
