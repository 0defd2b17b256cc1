"""``peftcore estimate``: exact counts checked against the real default model, the memory model's
invariants (hypothesis), the method ladder over the run store, the training budget of a case
(profile and task layers), ``precision: auto`` per device, and one-line errors with exit status 2.

The exact checks load SmolLM2-135M from the local converted cache three times (fp32, NF4 with
double quantization, int8), apply every method spec for real with ``apply_method`` on
``loaded.fresh()``, save it with ``save_pretrained`` and compare with the prediction made from the
config alone on the meta device.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from peftcore import plan
from peftcore.cli import main
from peftcore.errors import PeftcoreError
from peftcore.plan import cli as plan_cli
from peftcore.plan import files as plan_files
from peftcore.plan import ladder, weights
from peftcore.plan.precision import ASSUMED_BF16, PlannedPrecision, activation_precision
from peftcore.spec import BaseOptions, MethodSpec, SpecStore, TrainingBudget, apply_model_overrides
from peftcore.units import format_bytes

pytestmark = [
    # Importing bitsandbytes (through peft) on a CPU machine without the `kernels` package warns
    # once that it falls back to its slower CPU 4-bit kernel; nothing to act on here.
    pytest.mark.filterwarnings("ignore:Failed to load CPU gemm_4bit_forward:UserWarning"),
    # methods.apply_method calls transformers' gradient_checkpointing_enable, deprecated in
    # transformers 5 in favour of activation_checkpointing_enable (not this module's code).
    pytest.mark.filterwarnings("ignore:`gradient_checkpointing_enable` is deprecated:FutureWarning"),
]

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
    from peftcore.models.load import load_base

    loaded: dict[BaseOptions, Any] = {}

    def get(options: BaseOptions) -> Any:
        if options not in loaded:
            loaded[options] = load_base(model_spec, options, "cpu")
        return loaded[options]

    return get


@pytest.fixture(scope="module")
def model_info(model_spec: Any) -> plan.ModelInfo:
    return plan.resolve_model(MODEL, SPECS)


def _method(name: str, model_spec: Any) -> MethodSpec:
    return apply_model_overrides(STORE.get("methods", name), model_spec)


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


# --------------------------------------------------------------------------- exact against the real model


@pytest.mark.slow
@pytest.mark.parametrize("name", METHODS)
def test_counts_and_adapter_size_match_the_real_model(
    name: str, model_spec: Any, model_info: plan.ModelInfo, bases: Any, tmp_path: Path
) -> None:
    from peftcore.train.methods import apply_method, parameter_counts

    method = _method(name, model_spec)
    budget = TrainingBudget()
    predicted = plan.estimate(
        model_info.config,
        method,
        budget,
        model_name=MODEL,
        dtype=model_spec.dtype,
        adapter_overrides=model_spec.adapter_overrides,
    )
    model = apply_method(bases(method.base).fresh(), method, budget)
    trainable, total = parameter_counts(model)
    assert (predicted.trainable_params, predicted.total_params) == (trainable, total)
    if method.trains:
        model.save_pretrained(tmp_path)
    assert predicted.adapter_bytes == _weights_bytes(tmp_path)
    assert dict(predicted.adapter_files) == {p.name: p.stat().st_size for p in tmp_path.glob("*.safetensors")}


def _resident_bytes(model: Any, skip: set[int]) -> int:
    """Bytes of every tensor the model holds (parameters, buffers, bitsandbytes quant states),
    each storage once, except those in ``skip``."""
    seen = set(skip)
    total = 0

    def add(tensor: Any) -> None:
        nonlocal total
        if tensor is None:
            return
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in seen:
            seen.add(storage.data_ptr())
            total += storage.nbytes()

    for tensor in [*model.parameters(), *model.buffers()]:
        add(tensor)
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            for part in (state.absmax, state.code, getattr(state, "offset", None)):
                add(part)
            if state.state2 is not None:
                add(state.state2.absmax)
                add(state.state2.code)
        add(getattr(tensor, "SCB", None))
    return total


@pytest.mark.parametrize("name", ["lora", "qlora", "lora-8bit"])
def test_base_weights_match_what_the_case_holds(
    name: str, model_spec: Any, model_info: plan.ModelInfo, bases: Any
) -> None:
    """Every byte of the base copy a case holds, quantization state included, as predicted."""
    from peftcore.train.methods import apply_method

    method = _method(name, model_spec)
    predicted = plan.estimate(model_info.config, method, model_name=MODEL, dtype=model_spec.dtype)
    model = apply_method(bases(method.base).fresh(), method, TrainingBudget())
    adapter = {
        t.untyped_storage().data_ptr()
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.requires_grad or weights.is_adapter_name(n)
    }
    assert predicted.part("base_weights") == _resident_bytes(model, adapter)
    assert predicted.part("adapter_weights") == sum(
        t.numel() * t.element_size() for t in model.parameters() if t.requires_grad
    )


# --------------------------------------------------------------------------- properties


@functools.cache
def _small() -> plan.ModelInfo:
    """The shipped SmolLM2-135M config: no checkpoint needed."""
    return plan.resolve_model("smollm2-135m", None)


OVERRIDES = {"vblora": {"vector_length": 192}}
# Each example builds a model on the meta device (about a second): few examples, no shrinking
# (shrinking would rebuild it hundreds of times), no example database in the checkout.
PROPERTY = settings(
    max_examples=6,
    deadline=None,
    phases=(Phase.explicit, Phase.generate),
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _lora(rank: int) -> MethodSpec:
    return MethodSpec(
        name=f"lora-r{rank}",
        description="",
        tuner="lora",
        adapter={"r": rank, "lora_alpha": 16, "target_modules": "all-linear"},
    )


@pytest.mark.slow
@PROPERTY
@given(ranks=st.lists(st.integers(1, 96), min_size=3, max_size=3, unique=True))
def test_adapter_size_is_affine_in_lora_rank(ranks: list[int]) -> None:
    """The saved tensors grow by a fixed number of bytes per unit of rank; the file adds only
    the safetensors header, whose length moves with the digits of shapes and offsets."""
    data, files = {}, {}
    for rank in ranks:
        model = plan.apply_meta(_small(), _lora(rank), TrainingBudget())
        tensors = plan_files.adapter_tensors(model)
        data[rank] = sum(t.nbytes for t in tensors)
        files[rank] = plan_files.saved_files(model, _lora(rank))[0][1]
        assert 8 < files[rank] - data[rank] < 8 + 256 * len(tensors)
    a, b, c = sorted(ranks)
    assert (data[b] - data[a]) * (c - a) == (data[c] - data[a]) * (b - a)
    assert data[a] > 0 and data[a] < data[b] < data[c] and files[a] < files[b] < files[c]


@pytest.mark.slow
@PROPERTY
@given(
    name=st.sampled_from([n for n in METHODS if n not in ("qdora", "qlora", "lora-8bit")]),
    batch=st.integers(1, 8),
    seq=st.integers(8, 1024),
    checkpointing=st.booleans(),
    optimizer=st.sampled_from(["adamw_torch", "adamw_bnb_8bit"]),
)
def test_memory_parts_are_never_negative_and_grow_with_tokens(
    name: str, batch: int, seq: int, checkpointing: bool, optimizer: str
) -> None:
    # peft refuses prefix tuning under gradient checkpointing (its prefix is a KV cache): no case
    # of it exists, and apply_method raises as the engine would
    assume(not (name == "prefix_tuning" and checkpointing))
    method = STORE.get("methods", name)
    budget = TrainingBudget(
        batch_size=batch, max_length=seq, gradient_checkpointing=checkpointing, optimizer=optimizer
    )
    small = plan.estimate(_small().config, method, budget, adapter_overrides=OVERRIDES)
    assert all(part.bytes >= 0 for part in small.parts)
    assert small.adapter_bytes >= 0 and 0 <= small.trainable_params <= small.total_params
    assert small.peak_case_bytes >= small.part("base_weights")
    longer = plan.estimate(
        _small().config, method, dataclasses.replace(budget, max_length=seq + 64), adapter_overrides=OVERRIDES
    )
    assert longer.peak_case_bytes >= small.peak_case_bytes


@pytest.mark.parametrize("name", sorted(plan.shipped_models()))
def test_nf4_base_is_smaller_than_int8_smaller_than_bf16(name: str) -> None:
    config = plan.resolve_model(name, None).config

    def size(prepared: bool, **options: Any) -> int:
        return plan.base_weight_bytes(config, BaseOptions(**options), "bf16", prepared=prepared)

    # as load_base holds it: quantized linears, everything else in the bf16 compute dtype
    nf4, nf4_single = size(False, quantization="nf4"), size(False, quantization="nf4", double_quant=False)
    int8, bf16 = size(False, quantization="int8"), size(False)
    assert 0 < nf4 < nf4_single < int8 < bf16
    # as a training case holds it: peft's prepare_model_for_kbit_training upcasts the rest to fp32
    nf4, int8 = size(True, quantization="nf4"), size(True, quantization="int8")
    assert nf4 < int8
    if name == "gemma-3-270m":
        # 168M of its 268M parameters are the embedding: in fp32 it outweighs the bf16 model
        assert int8 > bf16
    else:
        assert int8 < bf16


def test_quantized_bytes_follow_bitsandbytes_blocks() -> None:
    """NF4: n/2 packed + per 64 values an absmax (fp32, or uint8 + per 256 of those an fp32);
    int8: n + one fp32 scale per row. 4096 x 4096 is 262,144 blocks, 1,024 nested blocks."""
    n = 4096 * 4096
    assert weights.quantized_weight_bytes(n, 4096, "nf4", False) == n // 2 + 4 * (n // 64) + 64
    assert weights.quantized_weight_bytes(n, 4096, "nf4", True) == n // 2 + n // 64 + 4 * 1024 + 1024 + 4 + 64
    assert weights.quantized_weight_bytes(n, 4096, "int8", False) == n + 4 * 4096


# --------------------------------------------------------------------------- units and the ladder


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24GB", 24 * 10**9),
        ("24GiB", 24 * 2**30),
        ("24000MB", 24 * 10**9),
        ("12G", 12 * 10**9),
        ("1.5 gib", 3 * 2**29),
        ("512", 512),
        ("64k", 64_000),
    ],
)
def test_budget_units(text: str, expected: int) -> None:
    assert plan_cli.budget_bytes(text) == expected


@pytest.mark.parametrize("text", ["24 gigs", "GB", "-1GB", "24GBB", ""])
def test_unreadable_budget_is_a_one_line_error(text: str) -> None:
    with pytest.raises(plan.PlannerError) as err:
        plan_cli.budget_bytes(text)
    assert "\n" not in str(err.value) and "24GiB" in str(err.value)
    assert str(err.value).startswith("--budget: ")


def _estimate_stub(method: str, peak: int) -> plan.Estimate:
    return plan.Estimate(
        model=MODEL,
        method=method,
        tuner="lora",
        device="cpu",
        precision="bf16",
        batch_size=4,
        seq_len=256,
        gradient_checkpointing=False,
        optimizer="adamw_torch",
        padded=True,
        trainable_params=1,
        total_params=2,
        adapter_bytes=1,
        adapter_files=(),
        parts=(),
        peak_case_bytes=peak,
        framework_overhead_bytes=0,
    )


def _write_records(
    results: Path,
    rows: list[tuple[str, str, float]],
    model: str = MODEL,
    *,
    run: str = "run-1",
    seed: int | None = None,
    finished_at: str | None = None,
) -> None:
    from peftcore.results.store import write_record
    from peftcore.vocab.record import RECORD_FORMAT

    for method, task, value in rows:
        metric = "perplexity" if task == "lambada" else "accuracy"
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "run_id": run,
            "case_id": f"{method}-{model}-{task}" + (f"-seed{seed}" if seed is not None else ""),
            "method": method,
            "model": model,
            "task": task,
            "status": "finished",
            "spec": {"task": {"metrics": [metric]}},
            "metrics": {"held_out": {metric: value}},
        }
        if seed is not None:
            record["seed"] = seed
        if finished_at is not None:
            record["provenance"] = {"finished_at": finished_at}
        write_record(results / run, record)


def test_ladder_orders_by_measured_quality(tmp_path: Path) -> None:
    # lambada's perplexity: lower is better
    _write_records(
        tmp_path,
        [
            ("lora", "arc_easy", 0.6),
            ("ia3", "arc_easy", 0.5),
            ("full", "arc_easy", 0.7),
            ("lora", "lambada", 9.0),
            ("ia3", "lambada", 12.0),
            ("full", "lambada", 8.0),
        ],
    )
    quality, how = ladder.measured_quality(tmp_path, MODEL)
    assert quality["full"].score == 1.0 and quality["lora"].score == 0.5 and quality["ia3"].score == 0.0
    assert "rank score" in how and "2 task(s)" in how
    fitting = ladder.ladder(
        [
            _estimate_stub("ia3", 10),
            _estimate_stub("lora", 20),
            _estimate_stub("full", 90),
            _estimate_stub("vera", 5),
        ],
        50,
        quality,
    )
    assert [e.method for e, _ in fitting] == ["lora", "ia3", "vera"]  # full does not fit; vera has no results


def test_ladder_without_results_orders_by_memory(tmp_path: Path) -> None:
    quality, how = ladder.measured_quality(tmp_path / "none", MODEL)
    assert quality == {} and how == ""
    fitting = ladder.ladder([_estimate_stub("lora", 20), _estimate_stub("ia3", 10)], 50, quality)
    assert [e.method for e, _ in fitting] == ["ia3", "lora"]


def test_ladder_falls_back_to_other_models_results(tmp_path: Path) -> None:
    _write_records(tmp_path, [("lora", "arc_easy", 0.6), ("ia3", "arc_easy", 0.5)], model="other-model")
    quality, how = ladder.measured_quality(tmp_path, MODEL)
    assert quality["lora"].score > quality["ia3"].score and "all models" in how


def test_quality_averages_seeds_and_takes_the_newest_record(tmp_path: Path) -> None:
    """Records come from the run store: per case the newest (provenance.finished_at, then run id),
    and a method's metric is its mean over seeds."""
    seeds = tmp_path / "seeds"
    # lora: 0.1 and 0.9 over two seeds, mean 0.5, below ia3's 0.6 (not its last seed's 0.9)
    _write_records(seeds, [("lora", "arc_easy", 0.1), ("ia3", "arc_easy", 0.6)], seed=0)
    _write_records(seeds, [("lora", "arc_easy", 0.9)], seed=1)
    quality, how = ladder.measured_quality(seeds, MODEL)
    assert quality["ia3"].score == 1.0 and quality["lora"].score == 0.0 and "mean over seeds" in how

    newest = tmp_path / "newest"
    _write_records(
        newest, [("lora", "sst2", 0.9), ("ia3", "sst2", 0.5)], run="run-b", finished_at="2025-06-01T00:00:00Z"
    )
    # a later folder name but an earlier finish: not the newest record of lora on sst2
    _write_records(newest, [("lora", "sst2", 0.2)], run="run-c", finished_at="2025-01-01T00:00:00Z")
    quality, _ = ladder.measured_quality(newest, MODEL)
    assert quality["lora"].score == 1.0 and quality["ia3"].score == 0.0


# --------------------------------------------------------------------------- command line


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["estimate", "--specs", str(SPECS), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_json_one_object_per_method(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--method", "ia3", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["method"] for r in rows] == ["lora", "ia3"]
    for row in rows:
        assert row["trainable_params"] > 0 and row["adapter_bytes"] > 0
        assert row["peak_case_bytes"] == pytest.approx(
            row["parts"]["base_weights"]["bytes"]
            + row["parts"]["adapter_weights"]["bytes"]
            + row["parts"]["optimizer_states"]["bytes"]
            + max(
                row["parts"]["activations"]["bytes"]
                + row["parts"]["autocast_copies"]["bytes"]
                + row["parts"]["loss_logits"]["bytes"],
                row["parts"]["optimizer_step"]["bytes"],
            )
        )
        assert row["peak_process_bytes"] == row["peak_case_bytes"] + row["framework_overhead_bytes"]


def test_cli_budget_ladder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _write_records(tmp_path, [("lora", "arc_easy", 0.6), ("ia3", "arc_easy", 0.5)])
    code, out, _ = _cli(
        capsys,
        "--model",
        "smollm2-360m",
        "--method",
        "ia3",
        "--method",
        "lora",
        "--method",
        "full",
        "--budget",
        "7GB",
        "--results",
        str(tmp_path),
    )
    assert code == 0
    fitting = out.split("methods that fit")[1]
    assert fitting.index("lora") < fitting.index("ia3") and "full" not in fitting and "rank score" in fitting
    assert fitting.startswith(" 7GB (= 6.52 GiB;")  # 7 * 10^9 bytes, written in binary units


def test_cli_config_path_and_bad_inputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps(json.loads(plan.shipped_models()["smollm2-135m"].read_text())))
    code, out, _ = _cli(capsys, "--model", str(config), "--method", "ia3")
    assert code == 0 and "ia3" in out

    bad: list[tuple[list[str], str]] = []
    vit = tmp_path / "vit" / "config.json"
    vit.parent.mkdir()
    vit.write_text(json.dumps({"model_type": "vit", "hidden_size": 64}))
    bad.append((["--model", str(vit), "--method", "lora"], "not a causal language model"))
    bad.append((["--model", "smollm2-360m", "--method", "lora", "--budget", "24 gigs"], "--budget: expected"))
    bad.append((["--model", "smollm2-360m", "--method", "lora", "--profile", "nope"], "--profile: unknown"))
    bad.append((["--model", "smollm2-360m", "--method", "lora", "--task", "nope"], "--task: unknown"))
    bad.append((["--model", "no-such-model", "--method", "lora"], "unknown model 'no-such-model'"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    bad.append((["--model", "nobody/no-such-model", "--method", "lora"], "--model path/to/config.json"))
    for args, expected in bad:
        code, _, err = _cli(capsys, *args)
        assert code == 2, args
        assert expected in err and err.count("\n") == 1, err


def test_method_whose_targets_match_nothing(specs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (specs / "methods" / "lora-nowhere.yaml").write_text(
        "description: LoRA on modules no model has\n"
        "include: lora\n"
        "adapter:\n  target_modules: [no_such_proj]\n"
    )
    code = main(["estimate", "--specs", str(specs), "--model", "smollm2-360m", "--method", "lora-nowhere"])
    err = capsys.readouterr().err
    assert code == 2 and "lora-nowhere" in err and "no_such_proj" in err and err.count("\n") == 1, err
    with pytest.raises(PeftcoreError):
        plan.estimate(_small().config, SpecStore(specs).get("methods", "lora-nowhere"))


def test_every_shipped_config_builds_a_causal_lm() -> None:
    """Parameter counts of the shipped configs, as their model cards state them."""
    expected = {
        "llama-3.2-1b": 1_235_814_400,
        "llama-3.1-8b": 8_030_261_248,
        "llama-2-7b": 6_738_415_616,
        "mistral-7b-v0.1": 7_241_732_096,
        "qwen3-0.6b": 596_049_920,
        "smollm2-135m": 134_515_008,
        "gemma-3-270m": 268_098_176,
    }
    for name, count in expected.items():
        model = plan.build_meta_model(plan.resolve_model(name, None).config, "bf16")
        assert sum(p.numel() for p in model.parameters()) == count, name
    assert len(plan.shipped_models()) == 13


def test_budget_is_the_case_budget_of_the_profile_and_task(
    specs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The layers of resolve_training: defaults < task < profile < method < command line."""
    (specs / "profiles" / "big-batch.yaml").write_text(
        "description: quick with a larger batch\ninclude: quick\ntraining:\n  batch_size: 16\n"
    )

    def estimated(*args: str) -> dict[str, Any]:
        argv = ["estimate", "--specs", str(specs), "--model", "smollm2-360m", "--method", "lora", "--json"]
        code = main([*argv, *args])
        out = capsys.readouterr().out
        assert code == 0
        row: dict[str, Any] = json.loads(out.splitlines()[0])
        return row

    quick = estimated()
    assert (quick["profile"], quick["task"], quick["batch_size"], quick["seq_len"]) == ("quick", None, 4, 256)
    big = estimated("--profile", "big-batch")
    assert big["batch_size"] == 16
    assert big["parts"]["loss_logits"]["bytes"] == 4 * quick["parts"]["loss_logits"]["bytes"]
    on_squad = estimated("--profile", "big-batch", "--task", "squad")  # squad trains on 384 tokens
    assert (on_squad["batch_size"], on_squad["seq_len"], on_squad["task"]) == (16, 384, "squad")
    given = estimated("--profile", "big-batch", "--task", "squad", "--batch-size", "2", "--seq-len", "64")
    assert (given["batch_size"], given["seq_len"]) == (2, 64)


def test_profile_variants_are_methods(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(
        capsys, "--model", "smollm2-360m", "--profile", "lora-sweep", "--method", "lora-r4", "--json"
    )
    row = json.loads(out)
    assert code == 0 and row["method"] == "lora-r4" and row["profile"] == "lora-sweep"
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--json")
    assert json.loads(out)["trainable_params"] > row["trainable_params"]  # r=32 over r=4


def test_model_spec_overrides_apply_as_in_a_case(model_spec: Any, model_info: plan.ModelInfo) -> None:
    assert model_info.spec == model_spec
    vblora = STORE.get("methods", "vblora")
    model = plan.apply_meta(model_info, vblora, TrainingBudget())
    expected = apply_model_overrides(vblora, model_spec).adapter["vector_length"]
    assert model.peft_config["default"].vector_length == expected == 192


def test_auto_precision_asks_the_device_that_is_here(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.setenv("PEFTCORE_PRECISION_FLOPS", "fp32=1e11,bf16=3e11,fp16=3e11")  # as if measured
    monkeypatch.setattr("peftcore.device.cpu_has_fast_bf16", lambda: False)
    assert activation_precision("auto", "cpu") == PlannedPrecision("fp32")  # bf16 not a candidate
    monkeypatch.setattr("peftcore.device.cpu_has_fast_bf16", lambda: True)
    assert activation_precision("auto", "cpu") == PlannedPrecision("bf16")
    monkeypatch.setenv("PEFTCORE_PRECISION_FLOPS", "fp32=3e11,bf16=1e11")  # bf16 there, but slower
    assert activation_precision("auto", "cpu") == PlannedPrecision("fp32")
    monkeypatch.setenv("PEFTCORE_PRECISION_FLOPS", "fp32=1e11")
    # a GPU that is here and has no bf16 (a T4, a V100): trains in fp32, not bf16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert activation_precision("auto", "cuda") == PlannedPrecision("fp32")
    assert activation_precision("auto", "cuda:1") == PlannedPrecision("bf16", ASSUMED_BF16)  # not here
    assert activation_precision("fp16", "cuda") == PlannedPrecision("fp16")


def test_cuda_that_is_not_here_is_assumed_bf16_and_said_so(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--device", "cuda")
    assert code == 0 and f"bf16 activations ({ASSUMED_BF16})" in out.splitlines()[0]
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--device", "cuda", "--json")
    row = json.loads(out)
    assert (row["precision"], row["precision_assumption"]) == ("bf16", ASSUMED_BF16)
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--json")
    assert json.loads(out)["precision_assumption"] is None  # the CPU is here: it was asked


def test_table_writes_binary_units(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora", "--json")
    row = json.loads(out)
    code, out, _ = _cli(capsys, "--model", "smollm2-360m", "--method", "lora")
    line = next(line for line in out.splitlines() if line.startswith("lora "))
    assert code == 0 and line.endswith(format_bytes(row["peak_process_bytes"]))
    assert format_bytes(row["peak_case_bytes"]) in line and "GiB" in line and " GB" not in out
