"""The training engine: every method trains, saves and reloads.

A few steps on a small fixed batch (the same examples every step), so a working method must
lower the loss; fp32 so reloaded and in-memory models can be compared exactly. The model is the
tiny Llama (tests/tiny_llama.py, saved as a model folder so that each quantized base variant
loads through the pipeline's loader): what is tested is the engine around the model. Every
method trains the real SmolLM2-135M in the smoke profile of ``make test``, gated on its scores.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from tiny_llama import tiny_base

import peftcore.train.trainer as train
from peftcore.data.tasks import load_task
from peftcore.errors import DivergenceError, UnchangedWeightsError
from peftcore.models.load import load_base
from peftcore.spec import DataSizes, EvalSettings, SpecStore
from peftcore.spec.cases import Case
from peftcore.spec.types import ModelSource, ModelSpec
from peftcore.train import methods, prompting

SPECS = SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")
TRAINED_METHODS = [name for name in SPECS.names("methods") if SPECS.get("methods", name).trains]
STEPS = 6


pytestmark = pytest.mark.slow  # training (each method, each quantized base): not in the quick tier


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> ModelSpec:
    """The tiny Llama with SmolLM2's tokenizer, saved as a model folder, as a model spec."""
    smollm2 = SPECS.get("models", "smollm2-135m")
    base = tiny_base(smollm2)
    folder = tmp_path_factory.mktemp("tiny-llama")
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return dataclasses.replace(
        smollm2,
        name="tiny-llama",
        description="the tiny Llama (tests/tiny_llama.py)",
        source=ModelSource(kind="local", path=str(folder)),
        # VB-LoRA's vector_length must divide every targeted dimension: 64, 128 and 32 here.
        adapter_overrides={"vblora": {"vector_length": 32}},
    )


def base_loader(model: ModelSpec):
    """``get(options)``: ``model`` loaded as that base variant, each variant loaded once."""
    loaded = {}

    def get(options):
        key = (options.quantization, options.double_quant, options.compute_dtype)
        if key not in loaded:
            loaded[key] = load_base(model, options, "cpu")
        return loaded[key]

    return get


@pytest.fixture(scope="module")
def bases(tiny_model: ModelSpec):
    """Loaded base variants of the tiny Llama, one per quantization, shared by the module's tests."""
    return base_loader(tiny_model)


@pytest.fixture(scope="module")
def fixed_batch():
    """Four ARC-Easy training examples, tokenized: one batch, the same every step."""
    task = SPECS.get("tasks", "arc_easy")
    return load_task(task, DataSizes(train=4, held_out=4, seen=2))


@pytest.fixture(scope="module")
def case_of(tiny_model: ModelSpec):
    """``case_of(method_name, **training)``: a case of the method on the tiny Llama."""
    return lambda method_name, **training: make_case(method_name, tiny_model, **training)


def make_case(method_name: str, model: ModelSpec, **training) -> Case:
    method = SPECS.get("methods", method_name)
    extra = model.adapter_overrides.get(method.tuner)
    if extra:
        method = dataclasses.replace(method, adapter={**method.adapter, **extra})
    budget = dataclasses.replace(_budget(method), **training)
    return Case(
        "test", method, model, SPECS.get("tasks", "arc_easy"), budget, DataSizes(4, 4, 2), EvalSettings()
    )


def _budget(method):
    from peftcore.spec.cases import resolve_training

    overrides = {
        "max_steps": STEPS,
        "batch_size": 4,
        "max_length": 64,
        "warmup_ratio": 0.0,
        "lr_scheduler": "constant",
        "precision": "fp32",
        "logging_steps": 1,
    }
    return resolve_training(
        SPECS, SPECS.get("profiles", "smoke"), method, SPECS.get("tasks", "arc_easy"), overrides
    )


def run_training(case: Case, base, data, tmp_path: Path, **train_options):
    """Tokenize, apply the method and train as the pipeline does; ``train_options`` go to train()."""
    fmt = prompting.PromptFormat.for_model(base.tokenizer, case.model.chat_template)
    dataset = prompting.tokenized_train_set(
        data.train, fmt, case.training.max_length, lm=False, data_key=data.split_sha256
    )
    torch.manual_seed(case.training.seed)
    model = methods.apply_method(base.fresh(), case.method, case.training)
    outcome = train.train(
        model,
        base.tokenizer,
        dataset,
        case.training,
        case.method,
        device="cpu",
        output_dir=tmp_path / "trainer",
        **train_options,
    )
    return model, outcome, dataset


def logits(model, dataset):
    batch = {"input_ids": torch.tensor([dataset[0]["input_ids"]])}
    model.eval()
    with torch.inference_mode():
        return model(**batch).logits.float()


@pytest.mark.parametrize("method_name", TRAINED_METHODS)
def test_method_trains_saves_and_reloads(method_name, bases, case_of, fixed_batch, tmp_path):
    case = case_of(method_name)
    base = bases(case.method.base)
    model, outcome, dataset = run_training(case, base, fixed_batch, tmp_path)

    losses = [loss for _, loss in outcome.loss_curve]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert outcome.train_tokens > 0 and outcome.tokens_per_second > 0
    # The same four examples every step: the loss must come down.
    assert sum(losses[-2:]) / 2 < sum(losses[:2]) / 2, losses

    trainable, total = methods.parameter_counts(model)
    assert 0 < trainable <= total

    methods.save_trained(model, tmp_path / "saved", case.method)
    files = list((tmp_path / "saved").glob("*.safetensors"))
    assert files and all(f.stat().st_size > 0 for f in files)
    before = logits(model, dataset)
    if case.method.is_peft:
        reloaded = methods.load_trained(base.fresh(), tmp_path / "saved", case.method)
    else:
        from transformers import AutoModelForCausalLM

        reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "saved", dtype=torch.float32)
    after = logits(reloaded, dataset)
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_same_seed_same_loss_curve(bases, case_of, fixed_batch, tmp_path):
    case = case_of("lora")
    base = bases(case.method.base)
    _, first, _ = run_training(case, base, fixed_batch, tmp_path / "a")
    _, second, _ = run_training(case, base, fixed_batch, tmp_path / "b")
    torch.testing.assert_close(
        torch.tensor([loss for _, loss in first.loss_curve]),
        torch.tensor([loss for _, loss in second.loss_curve]),
        rtol=0,
        atol=0,
    )


def test_adalora_reallocates_its_rank_budget_every_step(bases, case_of, fixed_batch, tmp_path):
    case = case_of("adalora", max_steps=12)
    base = bases(case.method.base)
    model, outcome, _ = run_training(case, base, fixed_batch, tmp_path)
    assert outcome.extra["adalora_updates"] == 12
    config = model.peft_config[model.active_adapter]
    assert config.rank_pattern, "the final budget was never allocated"
    assert outcome.extra["adalora_final_rank_total"] < outcome.extra["adalora_initial_rank_total"]


def test_nan_loss_stops_training_at_that_step(bases, case_of, fixed_batch, tmp_path):
    case = case_of("lora", max_steps=6)
    base = bases(case.method.base)
    fmt = prompting.PromptFormat.for_model(base.tokenizer, "auto")
    dataset = prompting.tokenized_train_set(
        fixed_batch.train, fmt, 64, lm=False, data_key=fixed_batch.split_sha256
    )
    model = methods.apply_method(base.fresh(), case.method, case.training)
    calls = {"n": 0}

    def poison(module, args, output):
        calls["n"] += 1
        if calls["n"] >= 3:  # the third forward pass, i.e. step 3
            return output * float("nan")
        return output

    model.get_base_model().model.norm.register_forward_hook(poison)
    with pytest.raises(DivergenceError) as err:
        train.train(
            model, base.tokenizer, dataset, case.training, case.method, device="cpu", output_dir=tmp_path
        )
    assert err.value.step == 3
    assert "step 3" in str(err.value) and "nan" in str(err.value)


def test_cases_start_from_a_pristine_base(bases, case_of, fixed_batch, tmp_path):
    """Training a fresh copy (fully, or with an adapter) leaves the loaded template untouched."""
    case = case_of("full", max_steps=2, learning_rate=1e-3)
    base = bases(case.method.base)
    snapshot = {k: v.clone() for k, v in base.model.state_dict().items()}
    flags = {name: p.requires_grad for name, p in base.model.named_parameters()}
    run_training(case, base, fixed_batch, tmp_path / "full")
    run_training(case_of("lora", max_steps=2), base, fixed_batch, tmp_path / "lora")
    after = base.model.state_dict()
    assert set(after) == set(snapshot)
    for key, value in snapshot.items():
        assert torch.equal(after[key], value), key
    assert not any("lora" in name for name, _ in base.model.named_modules())
    # full fine-tuning and peft each set requires_grad on their copy, never on the template
    assert {name: p.requires_grad for name, p in base.model.named_parameters()} == flags


def test_a_trained_model_is_scored_in_its_own_precision_not_the_training_one(case_of, fixed_batch, tmp_path):
    """Training under bf16 autocast must not leave autocast on the model: accelerate wraps the
    forward for mixed precision, and a wrapper left on would score every trained case in bf16
    whatever ``eval.precision`` says (the adapter disabled would then not reproduce the base)."""
    case = case_of("lora", max_steps=2, precision="bf16")
    base = tiny_base(case.model)
    model, outcome, dataset = run_training(case, base, fixed_batch, tmp_path)
    assert outcome.precision == "bf16"
    with model.disable_adapter():
        disabled = logits(model, dataset)
    torch.testing.assert_close(disabled, logits(base.model, dataset), rtol=0, atol=0)


def test_loss_is_only_on_the_answer(bases, fixed_batch):
    base = bases(SPECS.get("methods", "lora").base)
    fmt = prompting.PromptFormat.for_model(base.tokenizer, "auto")
    example = fixed_batch.train[0]
    row = prompting.encode_training(example, fmt, 256, lm=False)
    answer = [t for t, label in zip(row["input_ids"], row["labels"], strict=True) if label != -100]
    assert base.tokenizer.decode(answer) == fmt.continuation(example.target) + fmt.end
    # Truncation drops the start of the prompt, never the answer.
    short = prompting.encode_training(example, fmt, len(answer) + 3, lm=False)
    assert len(short["input_ids"]) == len(answer) + 3
    assert [
        t for t, label in zip(short["input_ids"], short["labels"], strict=True) if label != -100
    ] == answer


def test_a_one_step_run_with_warm_up_still_updates_the_weights(case_of, fixed_batch, tmp_path):
    """A linear warm-up gives its first step a learning rate of 0: rounded up to the whole of a
    one-step run, it left every lora_B at zero and the case scored as the untrained base."""
    case = case_of("lora", max_steps=1, warmup_ratio=0.1, lr_scheduler="linear")
    model, outcome, _ = run_training(case, tiny_base(case.model), fixed_batch, tmp_path)
    assert outcome.steps == 1
    assert any(bool(p.abs().sum() > 0) for name, p in model.named_parameters() if "lora_B" in name)


def test_training_that_changes_no_weight_fails_with_that_reason(case_of, fixed_batch, tmp_path):
    case = case_of("lora", max_steps=2, learning_rate=0.0)
    with pytest.raises(UnchangedWeightsError, match=r"changed none of the \d+ trainable tensors in 2 step"):
        run_training(case, tiny_base(case.model), fixed_batch, tmp_path)


def test_a_max_length_that_cuts_the_prompt_away_is_counted_and_refused(fixed_batch):
    """max_length 8 on a multiple-choice prompt keeps the answer and a few chat-template tokens:
    training would learn answers without their questions."""
    base_tokenizer = tiny_base(SPECS.get("models", "smollm2-135m")).tokenizer
    fmt = prompting.PromptFormat.for_model(base_tokenizer, "auto")
    roomy = prompting.truncation(fixed_batch.train, fmt, 512, lm=False)
    assert roomy == prompting.Truncation(examples=4, prompt_cut=0, prompt_lost=0, answer_cut=0)
    assert roomy.refusal(512) is None
    short = prompting.truncation(fixed_batch.train, fmt, 8, lm=False)
    assert short.examples == 4 and short.prompt_cut == 4 and short.prompt_lost == 4
    assert "8 tokens leave no word of the prompt in 4 of 4 training examples" in (short.refusal(8) or "")
    lengths = [len(fmt.encode_context(e.prompt)) for e in fixed_batch.train]
    middle = prompting.truncation(fixed_batch.train, fmt, min(lengths), lm=False)
    assert middle.prompt_cut == 4 and middle.prompt_lost == 0  # the start is cut, the question stays
