"""Deployment variants: the profile key, merge equivalence per tuner, the GGUF round trip, gates.

Model tests use a randomly initialised 2-layer Llama with SmolLM2's real tokenizer (fast); the
whole pipeline on the real model runs in the ``deploy`` profile (docs/deployment.md).
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
from tiny_llama import tiny_base

from peftcore.errors import SpecError
from peftcore.results.variants import variant_rows, with_variants
from peftcore.spec import SpecStore, TrainingBudget, expand
from peftcore.vocab.variants import GGUF_TYPES, NOT_MERGEABLE_TUNERS, parse_variant

pytestmark = pytest.mark.filterwarnings(
    # peft 0.21.2's get_peft_model reads a property transformers 5.23 deprecates.
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",
    # bitsandbytes (imported by peft) looks for optional CPU kernels in the `kernels` package,
    # which this project keeps out of the environment (assets.md).
    "ignore:Failed to load CPU gemm_4bit_forward:UserWarning",
)

SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
PROFILE = """\
description: tests/test_deploy.py
methods: [lora, prompt_tuning]
models: [smollm2-135m]
tasks: [sst2]
deploy: {variants: %s}
compare: %s
"""


def _profile(specs: Path, variants: str, compare: str = "[]") -> Path:
    path = specs / "profiles" / "dep.yaml"
    path.write_text(PROFILE % (variants, compare))
    return path


# --------------------------------------------------------------------------- the spec


@pytest.mark.parametrize(
    ("variants", "compare", "key", "says"),
    [
        ("[merged, nf5]", "[]", "deploy.variants[1]", "unknown deployment variant 'nf5'"),
        ("[gguf-iq2_xxs]", "[]", "deploy.variants[0]", "unknown GGUF type 'iq2_xxs'"),
        ("[nf4, nf4]", "[]", "deploy.variants", "listed twice: nf4"),
        ("[merged]", "[{metric: accuracy, case: prompt_tuning@merged, baseline: lora, max_drop: 0.1}]",
         "compare[0].case", "prompt_tuning cannot merge"),
        ("[merged]", "[{metric: accuracy, case: lora@nf4, baseline: lora, max_drop: 0.1}]",
         "compare[0].case", "variant 'nf4' is not in deploy.variants"),
        ("[merged], methods: [dora]", "[]", "deploy.methods[0]", "'dora' is not in the profile's grid"),
        ("[merged], tasks: [sst2, arc]", "[]", "deploy.tasks[1]", "'arc' is not in the profile's grid"),
        ("[merged], methods: [prompt_tuning]",
         "[{metric: accuracy, case: lora@merged, baseline: lora, max_drop: 0.1}]",
         "compare[0].case", "deploy.methods (prompt_tuning) does not give lora variants"),
    ],
)  # fmt: skip
def test_bad_deploy_specs_fail_at_load_in_one_line(
    specs: Path, variants: str, compare: str, key: str, says: str
) -> None:
    path = _profile(specs, variants, compare)
    with pytest.raises(SpecError) as err:
        expand(SpecStore(specs), "dep")
    message = str(err.value)
    assert "\n" not in message and str(path) in message and repr(key) in message and says in message


def test_deploy_settings_reach_every_case_and_leave_the_case_hash_alone(specs: Path) -> None:
    from peftcore.pipeline.identity import identify

    _profile(
        specs,
        "[merged, gguf-Q8_0]",
        "[{metric: brier_score, case: lora@merged, baseline: lora, max_drop: 0.01}]",
    )
    cases = expand(SpecStore(specs), "dep")
    assert {c.deploy.variants for c in cases} == {("merged", "gguf-Q8_0")}
    assert parse_variant("gguf-Q8_0").name == "gguf-q8_0"
    _profile(specs, "[merged]")
    fewer = expand(SpecStore(specs), "dep")
    data: Any = type("D", (), {"data_sha256": "d", "split_sha256": "s", "train": []})()
    hashes = [identify(c, "m", data, {}).case_hash for c in (cases[0], fewer[0])]
    assert hashes[0] == hashes[1]  # a variant more does not rerun the case


def test_deploy_methods_and_tasks_pick_the_cases_that_get_variants(specs: Path) -> None:
    _profile(specs, "[merged, nf4], methods: [lora], tasks: [sst2]")
    cases = {c.method.name: c for c in expand(SpecStore(specs), "dep")}
    assert cases["lora"].deploy.variants == ("merged", "nf4")
    assert cases["lora"].deploy.methods == ()  # the case keeps the variants, not the filter
    assert cases["prompt_tuning"].deploy.variants == ()


def test_not_mergeable_tuners_are_peft_prompt_learning_types() -> None:
    """Our list is peft's own: the tuners whose config says it is prompt learning (virtual
    tokens, a prompt encoder) or an adaption prompt."""
    from peft.config import PromptLearningConfig
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    prompt_learning = set()
    for peft_type, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # defaults peft warns about (CPT's hidden size)
                config = cls()
        except ValueError:  # a config that needs arguments (AdaLoRA's total_step)
            learning = issubclass(cls, PromptLearningConfig)
        else:
            learning = config.is_prompt_learning or config.is_adaption_prompt
        if learning:
            prompt_learning.add(peft_type.value.lower())
    assert prompt_learning == set(NOT_MERGEABLE_TUNERS)


@pytest.mark.parametrize("name", sorted(GGUF_TYPES))
def test_each_gguf_type_is_one_the_gguf_package_writes_and_reads(name: str) -> None:
    import gguf
    import numpy as np

    qtype = gguf.GGMLQuantizationType[GGUF_TYPES[name]]
    rows = np.random.default_rng(0).standard_normal((4, 64)).astype(np.float32)
    if qtype in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
        return  # plain numpy dtypes
    back = gguf.quants.dequantize(gguf.quants.quantize(rows, qtype), qtype)
    assert back.shape == rows.shape and np.abs(back - rows).max() < 0.5


# --------------------------------------------------------------------------- merging


@pytest.fixture(scope="module")
def store() -> SpecStore:
    return SpecStore(SHIPPED)


@pytest.fixture(scope="module")
def tiny(store: SpecStore) -> tuple[Any, Any]:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer."""
    import torch

    torch.set_num_threads(1)
    base = tiny_base(store.get("models", "smollm2-135m"))
    return base.model, base.tokenizer


def _ids(tokenizer: Any) -> Any:
    return tokenizer(
        ["The capital of France is Paris, and the film was wonderful."], return_tensors="pt"
    ).input_ids


# Every tuner the shipped methods use that can merge. Tolerance: merged and unmerged compute
# the same function in fp32; they differ by float rounding of W + dW against W x + dW x.
MERGEABLE = ["lora", "dora", "rslora", "ia3", "loha", "lokr", "vera", "adalora", "vblora", "oft"]
TOLERANCE = 1e-4  # absolute, on logits of magnitude ~1


@pytest.mark.parametrize("method_name", MERGEABLE)
def test_merged_logits_equal_the_unmerged_adapter(
    method_name: str, store: SpecStore, tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    import torch

    from peftcore.deploy.build import merge_adapter
    from peftcore.train.methods import apply_method, save_trained
    from peftcore.vocab.variants import mergeable

    model, tokenizer = tiny
    method = store.get("methods", method_name)
    if method_name == "vblora":  # its vector length must divide the tiny model's dimensions
        method = type(method)(**{**method.__dict__, "adapter": {**method.adapter, "vector_length": 16}})
    assert mergeable(method.tuner)
    peft_model = apply_method(copy.deepcopy(model), method, TrainingBudget(max_steps=10))
    torch.manual_seed(1)
    with torch.no_grad():  # a trained-looking adapter: LoRA's B starts at zero, IA3 at one
        for param in peft_model.parameters():
            if param.requires_grad:
                param.add_(0.05 * torch.randn_like(param))
    peft_model.eval()
    ids = _ids(tokenizer)
    with torch.no_grad():
        unmerged = peft_model(ids).logits
        plain = model(ids).logits
    save_trained(peft_model, tmp_path, method)
    merged = merge_adapter(copy.deepcopy(model), tmp_path, method)
    assert not hasattr(merged, "peft_config")  # a plain transformers model
    with torch.no_grad():
        merged_logits = merged(ids).logits
    assert (unmerged - plain).abs().max() > 100 * TOLERANCE  # the adapter changes the model
    assert (merged_logits - unmerged).abs().max() < TOLERANCE


def test_a_tuner_that_cannot_merge_is_reported_not_built(store: SpecStore) -> None:
    from peftcore.deploy.build import NotBuilt, merge

    method = store.get("methods", "prompt_tuning")
    with pytest.raises(NotBuilt, match="not mergeable: prompt_tuning"):
        merge(store.get("models", "smollm2-135m"), method, None, "cpu")


# --------------------------------------------------------------------------- GGUF


@pytest.mark.slow
def test_gguf_round_trip_f16_matches_and_q8_0_drop_is_measured(
    store: SpecStore, tiny: tuple[Any, Any], tmp_path: Path
) -> None:
    import torch

    from peftcore.deploy.gguf_file import load_gguf, write_gguf
    from peftcore.models.checkpoints import gguf_path

    model, tokenizer = tiny
    ids = _ids(tokenizer)
    with torch.no_grad():
        reference = model(ids).logits
    source = gguf_path(store.get("models", "smollm2-135m"))
    drops = {}
    for gguf_type in ("F16", "Q8_0"):
        written = write_gguf(model, tokenizer, tmp_path / f"m-{gguf_type}.gguf", gguf_type, source)
        assert written.fallback_f16 == 0
        with torch.no_grad():
            logits = load_gguf(written.path)(ids).logits
        drops[gguf_type] = float((logits - reference).abs().max())
    # F16 rounds each weight to 11 significant bits; Q8_0 to 8 bits per block of 32.
    assert drops["F16"] < 2e-3
    assert drops["F16"] < drops["Q8_0"] < 0.05
    # the tokenizer the file carries is the source GGUF's (what llama.cpp needs to run it)
    import gguf

    fields = gguf.GGUFReader(tmp_path / "m-Q8_0.gguf").fields
    assert fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert len(fields["tokenizer.ggml.tokens"].contents()) == len(tokenizer)


def test_gguf_export_refuses_another_architecture(tmp_path: Path, tiny: tuple[Any, Any]) -> None:
    from peftcore.deploy.gguf_file import write_gguf

    model, tokenizer = tiny
    other = copy.copy(model)
    other.config = copy.copy(model.config)
    other.config.model_type = "gpt2"
    with pytest.raises(ValueError, match="llama architecture, not 'gpt2'"):
        write_gguf(other, tokenizer, tmp_path / "x.gguf", "F16")
    assert not list(tmp_path.iterdir())  # nothing half-written


# --------------------------------------------------------------------------- gates and rows


def _record(method: str, brier: float, deploy: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "format": 1,
        "run_id": "r",
        "case_id": f"{method}-m-sst2",
        "method": method,
        "model": "m",
        "task": "sst2",
        "seed": 0,
        "status": "finished",
        "spec": {"task": {"metrics": ["brier_score"]}, "method": {"tuner": "lora"}},
        "metrics": {"held_out": {"brier_score": brier}},
        "training": {"peak_memory_bytes": 1},
        **({"deploy": deploy} if deploy else {}),
    }


def test_a_variant_is_gated_like_a_case(specs: Path) -> None:
    from peftcore.gates import check_relative

    compare = "[{metric: brier_score, case: lora@nf4, baseline: lora, max_drop: 0.02}]"
    profile = _profile(specs, "[merged, nf4]", compare)
    rules = SpecStore(specs).get("profiles", "dep").compare
    variant = {"status": "finished", "metrics": {"held_out": {"brier_score": 0.30}}, "size_bytes": 5}
    lost = {"status": "not_mergeable", "reason": "not mergeable: ..."}
    records = [_record("lora", 0.25, {"nf4": variant, "merged": lost})]
    rows = with_variants(records)
    assert [r["method"] for r in rows] == ["lora", "lora@nf4"]  # the unbuilt one is no row
    assert rows[1]["deployment"] == {"size_bytes": 5} and rows[1]["variant_of"] == "lora-m-sst2"
    failures = check_relative(rows, rules, profile)
    assert (
        len(failures) == 1 and "lora-m-sst2@nf4" in str(failures[0]) and "max_drop 0.02" in str(failures[0])
    )
    variant["metrics"] = {"held_out": {"brier_score": 0.26}}
    assert check_relative(with_variants(records), rules, profile) == []
    # a rule for every method as trained does not reach the variants
    star = SpecStore(specs).get("profiles", "dep")
    assert variant_rows(_record("lora", 0.2, {"nf4": variant}))[0]["method"] == "lora@nf4"
    assert star is not None


def test_the_report_has_a_row_per_variant_with_its_drop() -> None:
    from peftcore.report.deploy import deploy_md
    from peftcore.report.tables import summary_csv

    variant = {
        "status": "finished",
        "metrics": {"held_out": {"brier_score": 0.30}},
        "size_bytes": 2**20,
        "inference": {"latency_ms_per_example": 12.5},
    }
    record = _record("lora", 0.25, {"nf4": variant, "merged": {"status": "not_mergeable", "reason": "why"}})
    text = "\n".join(deploy_md([record]))
    assert "| lora@nf4 | 0.3 | +0.0500 | 1.00 MiB |" in text and "lora@merged: not mergeable (why)" in text
    csv_lines = summary_csv(with_variants([record])).splitlines()
    assert len(csv_lines) == 3 and "deployment.size_bytes" in csv_lines[0]
    assert csv_lines[2].split(",")[1] == "lora-m-sst2@nf4"


def test_a_variants_change_carries_its_interval_paired_over_the_examples() -> None:
    """Δ of a variant scored on the same examples as its case: the paired difference and its 95%
    interval (peftcore.compare), the same numbers compare() gives for the two rows."""
    from peftcore.report.deploy import deploy_md
    from peftcore.results.compare import compare

    uids = [f"e{i}" for i in range(8)]
    case_scores = [0.10, 0.30, 0.20, 0.40, 0.25, 0.35, 0.15, 0.25]
    shifts = [0.02, 0.0, 0.01, 0.03, -0.01, 0.02, 0.01, 0.0]
    variant_scores = [s + d for s, d in zip(case_scores, shifts, strict=True)]

    def examples(scores: list[float]) -> dict[str, Any]:
        return {"held_out": {"uid": uids, "scores": {"brier_score": scores}}}

    variant = {
        "status": "finished",
        "metrics": {"held_out": {"brier_score": sum(variant_scores) / 8}},
        "examples": examples(variant_scores),
    }
    record = _record("lora", sum(case_scores) / 8, {"nf4": variant})
    record["examples"] = examples(case_scores)
    change = compare(variant_rows(record)[0], record, "brier_score")
    assert change.low < change.difference < change.high and change.n == 8
    row = next(line for line in deploy_md([record]) if line.startswith("| lora@nf4 |"))
    assert f"| {change.difference:+.4f} [{change.low:+.4f}, {change.high:+.4f}] |" in row


def test_the_html_report_plots_each_variant_against_size_and_latency(tmp_path: Path) -> None:
    from peftcore.report.html import report_html
    from peftcore.report.plots import draw_plots
    from peftcore.results.store import Run

    def variant(brier: float, size: int, latency: float) -> dict[str, Any]:
        return {
            "status": "finished",
            "metrics": {"held_out": {"brier_score": brier}},
            "size_bytes": size,
            "inference": {"latency_ms_per_example": latency},
        }

    variants = {"merged": variant(0.25, 2**29, 300.0), "nf4": variant(0.30, 2**27, 430.0)}
    record = _record("lora", 0.25, variants)
    record["inference"] = {"latency_ms_per_example": 680.0}
    run = Run(tmp_path / "r", (record,), ())
    plots = draw_plots(run)
    assert [p.id for p in plots["deploy"]] == ["plot-deploy-sst2-m"]
    assert plots["deploy"][0].png.startswith(b"\x89PNG")
    page = report_html(run, plots)
    assert '<section id="deploy">' in page and 'id="plot-deploy-sst2-m"' in page
    assert "<td>lora@nf4</td><td class=num>0.3</td><td class=num>+0.0500</td>" in page
    assert "Deployment variants" not in report_html(Run(tmp_path / "r", (_record("lora", 0.25),), ()), {})
