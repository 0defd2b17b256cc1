"""The evaluators on the real default model (SmolLM2-135M-Instruct), with small example counts.

The model loads once for the module. Equality tests (batched against unbatched, padded against
alone) run in fp32, where the only differences are float summation order; the rest run in bf16
autocast, the precision cases use on this CPU.
"""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import pytest

from peftcore import score as scoring
from peftcore.data.example import Example
from peftcore.score.choices import _tied, choice_group, choice_length, choice_loglikelihoods
from peftcore.score.decoding import MIN_SHARED_PREFIX, generate_token_ids, generation_contexts
from peftcore.score.generation import cut_at_stop, extract_answer, max_new_tokens
from peftcore.score.loglikelihood import BATCH_TOKEN_BUDGET, _token_batches
from peftcore.score.perplexity import sliding_windows
from peftcore.spec import BaseOptions, DataSizes, EvalSettings, SpecStore
from peftcore.train.prompting import PromptFormat

pytestmark = pytest.mark.filterwarnings(
    # peft 0.21.2's get_peft_model reads model.is_gradient_checkpointing, which transformers 5.23
    # deprecates; the warning is about peft's code, there is nothing to change on our side.
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"
)
pytestmark = [
    pytestmark,
    pytest.mark.slow,
]  # the real model, training or pytest sessions of it: not in the quick tier

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
ARC_EXAMPLES = 100


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """One intra-op thread while this module runs (restored after).

    The test machines share two cores between several jobs. Measured there under load, a
    forward pass of this small model ran 4-6x faster with one OpenMP thread than with two
    (threads spin-waiting on a busy core); on an idle machine one thread costs little for
    these tiny batches.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store() -> SpecStore:
    return SpecStore(SPECS)


@pytest.fixture(scope="module")
def base(store):
    from peftcore.models.load import load_base

    return load_base(store.get("models", "smollm2-135m"), BaseOptions(), "cpu")


@pytest.fixture(scope="module")
def fmt(base, store) -> PromptFormat:
    """The format cases use: the model spec's chat_template (auto: the instruct chat template)."""
    return PromptFormat.for_model(base.tokenizer, store.get("models", "smollm2-135m").chat_template)


def held_out(store: SpecStore, task: str, n: int) -> tuple[Example, ...]:
    from peftcore.data.tasks import load_task

    return load_task(store.get("tasks", task), DataSizes(train=1, held_out=n, seen=1)).held_out


def run(model, fmt, examples, task, batch_size=8, precision="fp32", **kwargs) -> scoring.ScoreResult:
    settings = EvalSettings(batch_size=batch_size, max_new_tokens=kwargs.pop("max_new_tokens", None))
    return scoring.score(model, fmt, examples, task, settings, device="cpu", precision=precision, **kwargs)


def with_generation(task, **changes):
    return dataclasses.replace(task, generation=dataclasses.replace(task.generation, **changes))


# --------------------------------------------------------------------------- pure helpers


def test_cut_at_stop_takes_the_earliest_stop_string() -> None:
    assert cut_at_stop(" Paris\nQuestion: next", ["Question:", "\n"]) == " Paris"
    assert cut_at_stop("no stop here", ["\n\n", ""]) == "no stop here"
    assert cut_at_stop("\nleading", ["\n"]) == ""


def test_extract_answer_modes() -> None:
    solution = "She sold 48 / 2 = 24 clips in May.\nSo 48 + 24 = 72 clips in all.\n#### 72"
    assert extract_answer(solution, "number") == "72"
    assert extract_answer("The total is $1,250.50.", "number") == "1250.5"
    assert extract_answer("I cannot tell.", "number") == ""
    assert extract_answer("\n  Denver Broncos \nmore", "first_line") == "Denver Broncos"
    assert extract_answer("  two\nlines ", "none") == "two\nlines"
    with pytest.raises(ValueError, match=r"unknown generation\.extract"):
        extract_answer("x", "last_word")


@pytest.mark.parametrize(("length", "window"), [(2, 2), (10, 4), (11, 4), (50, 7), (5, 100)])
def test_sliding_windows_score_every_token_but_the_first_exactly_once(length: int, window: int) -> None:
    tokens = list(range(length))
    windows = sliding_windows(tokens, window, max(1, window // 2))
    scored = [t for w in windows for t in w.tokens[w.start :]]
    assert scored == tokens[1:]
    assert all(len(w.tokens) <= window for w in windows)


def test_loglikelihood_batches_keep_to_rows_and_token_budget() -> None:
    lengths = [5000, 3000, 900, 900, 900, 900, 900, 10, 10, 10]  # sorted longest first
    batches = list(_token_batches(range(len(lengths)), lengths, batch_size=4))
    assert batches == [[0], [1], [2, 3, 4, 5], [6, 7, 8, 9]]
    for batch in batches:
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= BATCH_TOKEN_BUDGET


def test_choice_lengths_are_lm_evals_without_the_separating_space(fmt) -> None:
    plain = PromptFormat(fmt.tokenizer, chat=False)
    # lm-eval: acc_norm divides by len(choice) in characters, acc_bytes by its UTF-8 bytes,
    # the choice taken without its target delimiter " ".
    assert choice_length(plain, " café") == 4
    assert choice_length(plain, " café", "bytes") == 5  # é is 2 bytes
    assert choice_length(fmt, " café") == 4  # a chat turn has no delimiter to strip
    assert choice_length(plain, " ") == 1  # never a division by zero


def test_a_tie_is_counted_and_broken_toward_the_first_choice() -> None:
    from peftcore.score.choices import _argmax

    assert _tied([-1.0, -1.0, -2.0]) and _argmax([-1.0, -1.0, -2.0]) == 0  # as numpy.argmax
    assert not _tied([-1.0, -1.5, -1.0 - 1e-12])


# --------------------------------------------------------------------------- choices


def test_arc_easy_accuracy_is_plausible_for_a_135m_model(base, store, record_property) -> None:
    # lm-evaluation-harness's protocol (no chat template), the one published figures use; with
    # the instruct chat template the model does about the same (see the scoring report).
    fmt = PromptFormat(base.tokenizer, chat=False)
    task = store.get("tasks", "arc_easy")
    examples = held_out(store, "arc_easy", ARC_EXAMPLES)
    result = run(base.model, fmt, examples, task, 16)  # fp32: the pipeline's scoring default
    record_property("arc_easy", result.metrics)
    print(f"\narc_easy ({len(examples)} held out, chat={fmt.chat}): {result.metrics} {result.inference}")
    assert 0.4 <= result.metrics["accuracy"] <= 0.8  # chance is 0.25
    assert 0.3 <= result.metrics["accuracy_norm"] <= 0.8
    assert set(result.metrics) == {"accuracy", "accuracy_norm", "brier_score"}
    assert 0.0 < result.metrics["brier_score"] < 1.0  # 0.75 for a uniform guess over 4 choices
    assert result.inference["examples"] == len(examples)
    assert result.inference["peak_memory_bytes"] > 0
    assert result.inference["shared_context"] is True
    first = result.predictions[0]
    assert first["uid"] == examples[0].uid and first["label"] == examples[0].label
    assert len(first["loglikelihoods"]) == len(examples[0].choices)


def test_batched_loglikelihoods_equal_unbatched(base, store) -> None:
    import torch

    plain = PromptFormat(base.tokenizer, chat=False)
    groups = [choice_group(plain, e, 2048) for e in held_out(store, "arc_easy", 4)]
    assert len({len(g.context) for g in groups}) > 1  # padding really happens
    with torch.inference_mode():
        runs = {
            (share, size): choice_loglikelihoods(
                base.model, groups, batch_size=size, pad_id=0, device="cpu", share_context=share
            )[0]
            for share, size in [(False, 1), (False, 16), (True, 4)]
        }
    reference = runs[(False, 1)]
    for values in runs.values():
        assert [len(v) for v in values] == [len(v) for v in reference]
        for got, want in zip(values, reference, strict=True):
            assert got == pytest.approx(want, abs=2e-3)


def test_classification_reports_accuracy_and_macro_f1(base, fmt, store) -> None:
    task = store.get("tasks", "sst2")
    examples = held_out(store, "sst2", 6)
    result = run(base.model, fmt, examples, task, 8, "bf16")
    assert {"accuracy", "macro_f1", "accuracy_norm"} <= set(result.metrics)
    assert all(0 <= v <= 1 for v in result.metrics.values())
    assert all(p["choice"] in (0, 1) for p in result.predictions)


def test_a_context_longer_than_the_model_loses_its_start(base, fmt, store) -> None:
    example = held_out(store, "arc_easy", 1)[0]
    group = choice_group(fmt, example, max_length=12)
    longest = max(len(c) for c in group.continuations)
    assert len(group.context) - 1 + longest == 12
    assert group.context == tuple(fmt.encode_context(example.prompt)[-len(group.context) :])


# --------------------------------------------------------------------------- generation


def test_left_padded_generation_equals_each_prompt_alone(base, fmt, store) -> None:
    task = with_generation(store.get("tasks", "nq_open"), max_new_tokens=6)
    examples = held_out(store, "nq_open", 3)
    alone = run(base.model, fmt, examples, task, 1, "fp32")
    batched = run(base.model, fmt, examples, task, 3, "fp32")
    assert batched.inference["prompt_padding_fraction"] > 0
    # The chat template's system turn is run once for the batch (padding goes after it).
    assert batched.inference["shared_prefix_tokens"] >= MIN_SHARED_PREFIX
    assert alone.inference["shared_prefix_tokens"] == 0
    assert [p["generated"] for p in batched.predictions] == [p["generated"] for p in alone.predictions]
    assert batched.metrics == alone.metrics
    assert set(batched.metrics) == {"f1", "exact_match", "rouge_l", "cosine_similarity", "bertscore_f1"}


def test_generation_stops_at_stop_strings_and_max_new_tokens(base, fmt, store) -> None:
    examples = held_out(store, "nq_open", 3)
    contexts = generation_contexts(fmt, [e.prompt for e in examples], 2048)
    common = {"batch_size": 3, "device": "cpu"}
    import torch

    with torch.inference_mode():
        capped, _ = generate_token_ids(base.model, fmt, contexts, new_tokens=3, stop=(), **common)
        free, _ = generate_token_ids(base.model, fmt, contexts, new_tokens=20, stop=(), **common)
        stopped, _ = generate_token_ids(base.model, fmt, contexts, new_tokens=20, stop=("e",), **common)
    assert all(len(ids) <= 3 for ids in capped)
    assert any(len(ids) > 3 for ids in free)
    decode = base.tokenizer.decode
    for ids, unstopped in zip(stopped, free, strict=True):
        if "e" in decode(unstopped):
            # Stopped at the token that completes the stop string, not later.
            assert "e" in decode(ids) and "e" not in decode(ids[:-1])
            assert ids == unstopped[: len(ids)]
    task = with_generation(store.get("tasks", "nq_open"), stop=("e",), max_new_tokens=20, extract="none")
    result = run(base.model, fmt, examples, task, 3)
    assert all("e" not in p["generated"] for p in result.predictions)
    assert result.inference["max_new_tokens"] == 20


def test_settings_max_new_tokens_overrides_the_task(store) -> None:
    task = store.get("tasks", "gsm8k")
    assert max_new_tokens(task, EvalSettings()) == task.generation.max_new_tokens
    assert max_new_tokens(task, EvalSettings(max_new_tokens=7)) == 7


def test_gsm8k_answers_are_numbers_extracted_from_the_generated_text(base, fmt, store) -> None:
    task = store.get("tasks", "gsm8k")
    examples = held_out(store, "gsm8k", 2)
    result = run(base.model, fmt, examples, task, 2, max_new_tokens=32)
    for prediction in result.predictions:
        assert prediction["answer"] == extract_answer(prediction["generated"], "number")
        assert "\n\n" not in prediction["generated"] and "Question:" not in prediction["generated"]
    assert any(p["answer"] for p in result.predictions)  # the model writes numbers
    assert set(result.metrics) == {"number_exact_match", "abs_diff", "number_unparseable_rate"}
    assert 0 <= result.metrics["number_exact_match"] <= 1
    assert result.inference["generated_tokens"] <= 2 * 32


# --------------------------------------------------------------------------- perplexity


def test_perplexity_of_text_is_sane_and_far_below_shuffled_tokens(base, fmt, store) -> None:
    task = store.get("tasks", "lambada")
    examples = held_out(store, "lambada", 4)
    natural = run(base.model, fmt, examples, task, 4)
    rng = random.Random(0)
    shuffled = []
    for example in examples:
        ids = base.tokenizer(example.target, add_special_tokens=False)["input_ids"]
        rng.shuffle(ids)
        shuffled.append(dataclasses.replace(example, target=base.tokenizer.decode(ids)))
    scrambled = run(base.model, fmt, shuffled, task, 4)
    ppl = natural.metrics["perplexity"]
    print(f"\nlambada perplexity {ppl:.2f}, shuffled tokens {scrambled.metrics['perplexity']:.1f}")
    # LAMBADA is fiction; this model gives 30-60 there and about 20-30 on Wikipedia prose.
    assert 5 < ppl < 100
    assert scrambled.metrics["perplexity"] > 10 * ppl
    counts = [len(base.tokenizer(e.target)["input_ids"]) - 1 for e in examples]
    assert [p["tokens"] for p in natural.predictions] == counts


def test_perplexity_equals_the_models_own_loss_on_one_text(base, fmt, store) -> None:
    import torch

    example = held_out(store, "lambada", 1)[0]
    ids = base.tokenizer(example.target, return_tensors="pt").input_ids
    with torch.inference_mode():
        loss = float(base.model(input_ids=ids, labels=ids).loss)
    result = run(base.model, fmt, [example], store.get("tasks", "lambada"), 1, "fp32")
    assert result.metrics["perplexity"] == pytest.approx(math.exp(loss), rel=1e-4)


def test_perplexity_slides_a_window_over_long_text(base, fmt, store) -> None:
    task = store.get("tasks", "lambada")
    text = " ".join(e.target for e in held_out(store, "lambada", 3))
    example = Example(uid="long", prompt="", target=text)
    n = len(base.tokenizer(text)["input_ids"])
    whole = run(base.model, fmt, [example], task, 8, "fp32")
    windowed = run(base.model, fmt, [example], task, 8, "fp32", max_length=64)
    assert windowed.inference["windows"] == math.ceil((n - 64) / 32) + 1
    assert whole.inference["windows"] == 1
    assert windowed.predictions[0]["tokens"] == whole.predictions[0]["tokens"] == n - 1
    # Less context per token: a little worse, never wildly different.
    assert whole.metrics["perplexity"] <= windowed.metrics["perplexity"] < 1.6 * whole.metrics["perplexity"]


# --------------------------------------------------------------------------- adapters and quantization


def _peft_model(base, tuner: str):
    import torch
    from peft import LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

    torch.manual_seed(0)
    config = {
        # init_lora_weights=False: random B, so the adapter really changes the outputs.
        "lora": LoraConfig(task_type="CAUSAL_LM", r=4, target_modules="all-linear", init_lora_weights=False),
        "prompt_tuning": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8),
        "prefix_tuning": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=8),
    }[tuner]
    return get_peft_model(base.fresh(), config)


@pytest.mark.parametrize("tuner", ["lora", "prompt_tuning", "prefix_tuning"])
def test_peft_models_score_the_same_batched_and_alone(base, fmt, store, tuner: str) -> None:
    model = _peft_model(base, tuner)
    arc = store.get("tasks", "arc_easy")
    choices = held_out(store, "arc_easy", 2)
    one = run(model, fmt, choices, arc, 1, "fp32")
    many = run(model, fmt, choices, arc, 8, "fp32")
    assert many.inference["shared_context"] is (tuner == "lora")  # virtual tokens rule sharing out
    for a, b in zip(one.predictions, many.predictions, strict=True):
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], abs=2e-3)
    plain = run(base.model, fmt, choices[:1], arc, 8, "fp32")  # the adapter changes the scores
    assert plain.predictions[0]["loglikelihoods"] != pytest.approx(
        many.predictions[0]["loglikelihoods"], abs=1e-2
    )

    nq = with_generation(store.get("tasks", "nq_open"), max_new_tokens=5)
    prompts = held_out(store, "nq_open", 2)
    alone = run(model, fmt, prompts, nq, 1, "fp32")
    batched = run(model, fmt, prompts, nq, 2, "fp32")
    assert batched.inference["prompt_padding_fraction"] > 0
    assert [p["generated"] for p in batched.predictions] == [p["generated"] for p in alone.predictions]


def test_scoring_gives_the_model_back_in_training_mode(base, fmt, store) -> None:
    model = _peft_model(base, "lora")
    model.train()
    task = store.get("tasks", "arc_easy")
    run(model, fmt, held_out(store, "arc_easy", 1), task)
    assert model.training


def test_nf4_quantized_base_scores_choices_and_generates(store, fmt) -> None:
    from peftcore.models.load import load_base

    nf4 = load_base(store.get("models", "smollm2-135m"), BaseOptions(quantization="nf4"), "cpu")
    arc = store.get("tasks", "arc_easy")
    result = run(nf4.model, fmt, held_out(store, "arc_easy", 4), arc, 8)
    assert all(math.isfinite(v) for p in result.predictions for v in p["loglikelihoods"])
    nq = with_generation(store.get("tasks", "nq_open"), max_new_tokens=6)
    generated = run(nf4.model, fmt, held_out(store, "nq_open", 2), nq, 2)
    assert any(p["generated"] for p in generated.predictions)


# --------------------------------------------------------------------------- errors and records


def test_errors_name_the_problem(base, fmt, store) -> None:
    task = store.get("tasks", "arc_easy")
    with pytest.raises(ValueError, match="no examples"):
        run(base.model, fmt, [], task, 8, "fp32")
    with pytest.raises(ValueError, match="no choices"):
        run(base.model, fmt, [Example("u", "Q?", " A")], task)
    with pytest.raises(ValueError, match="no valid gold label"):
        run(base.model, fmt, [Example("u", "Q?", " A", choices=(" A", " B"), label=2)], task)
    with pytest.raises(ValueError, match="precision"):
        run(base.model, fmt, held_out(store, "arc_easy", 1), task, 8, "int4")
    bad = dataclasses.replace(task, metrics=("f1",))
    with pytest.raises(ValueError, match="metric 'f1' takes texts"):
        run(base.model, fmt, held_out(store, "arc_easy", 1), bad)


def test_score_result_is_json_ready(base, fmt, store) -> None:
    import json

    task = store.get("tasks", "arc_easy")
    result = run(base.model, fmt, held_out(store, "arc_easy", 2), task)
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()
    for key in (
        "latency_ms_per_example",
        "examples_per_second",
        "peak_memory_bytes",
        "memory_method",
        "examples",
    ):
        assert key in result.inference
