"""Forgetting, measured: the next-token loss on general text (shifted targets, a mean over
tokens), zero for the untouched base and for an adapter that starts as the identity, positive
for a model trained to overfit one example, and "before" always the untouched base model.

Models are a hand-made bigram model whose loss is known and a tiny randomly initialised Llama
(hidden size 64, 2 layers) with SmolLM2's real tokenizer, so nothing here takes long.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from tiny_llama import tiny_base

from peftcore.models.load import LoadedBase
from peftcore.pipeline import off_task
from peftcore.pipeline.off_task import general_text_figures, load_off_task_data, other_tasks_scores
from peftcore.score.general_text import mean_token_loss, truncated_requests
from peftcore.spec import Case, SpecStore, expand
from peftcore.train.prompting import PromptFormat
from peftcore.vocab.record import OOD_PREFIX, Record, keep_scores

pytestmark = pytest.mark.filterwarnings(
    # peft 0.21.2's get_peft_model reads model.is_gradient_checkpointing, which transformers 5.23
    # deprecates; the warning is about peft's code, there is nothing to change on our side.
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning",
    # bitsandbytes (imported by peft) looks for optional CPU kernels in the `kernels` package,
    # which this project keeps out of the environment (assets.md).
    "ignore:Failed to load CPU gemm_4bit_forward:UserWarning",
)

PROFILE = """\
description: tests/test_forgetting.py
methods: [base, lora]
models: [smollm2-135m]
tasks: [sst2]
data: {train: 2, held_out: 3, seen: 0}
eval:
  batch_size: 4
  forgetting: {task: coqa_passages, documents: 6, max_tokens: 48}
  also_score: [arc_easy]
"""


# --------------------------------------------------------------------------- the shift, by hand


class _Chars:
    """A tokenizer of the letters a, b, c: one token each (ids 0, 1, 2)."""

    pad_token_id = eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        return {"input_ids": ["abc".index(c) for c in text]}


class _Bigram(torch.nn.Module):
    """Logits at position k depend on token k only: p(next = t+1 mod 3 | t) = 0.7, else 0.15."""

    def __init__(self) -> None:
        super().__init__()
        probs = torch.full((3, 3), 0.15)
        for t in range(3):
            probs[t, (t + 1) % 3] = 0.7
        self.register_buffer("logits", probs.log())

    def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
        return SimpleNamespace(logits=self.logits[input_ids])


def _loss(texts: list[str], max_tokens: int = 768) -> float:
    fmt = PromptFormat(_Chars(), chat=False)
    return mean_token_loss(
        _Bigram(), fmt, texts, max_tokens=max_tokens, batch_size=2, device="cpu", precision="fp32"
    ).loss


def test_each_token_is_predicted_from_the_ones_before_it() -> None:
    # "abcab": every next token is the likely one (p = 0.7). Without the shift the model would be
    # asked for each token at its own position (p = 0.15 each); shifted the wrong way, likewise.
    assert _loss(["abcab"]) == pytest.approx(-math.log(0.7), abs=1e-6)


def test_the_mean_is_over_tokens_and_texts_are_cut_to_max_tokens() -> None:
    # 4 likely transitions and 1 unlikely one (a -> a): a mean over tokens, not over texts.
    expected = (4 * -math.log(0.7) - math.log(0.15)) / 5
    assert _loss(["abcab", "aa"]) == pytest.approx(expected, abs=1e-6)
    # Cut to 3 tokens, "abcaa" keeps "abc": two likely transitions; the unlikely a -> a is gone.
    assert _loss(["abcaa"], max_tokens=3) == pytest.approx(-math.log(0.7), abs=1e-6)
    fmt = PromptFormat(_Chars(), chat=False)
    assert [len(r.tokens) for r in truncated_requests(fmt, ["abcaa", "b", "ab"], 3)] == [3, 2]
    with pytest.raises(ValueError, match="no text has two tokens"):
        truncated_requests(fmt, ["a"], 768)


# --------------------------------------------------------------------------- a tiny Llama


@pytest.fixture(scope="module")
def store() -> SpecStore:
    return SpecStore(Path(__file__).resolve().parents[1] / "benchmarks" / "specs")


@pytest.fixture(scope="module")
def tiny(store: SpecStore) -> LoadedBase:
    """The tiny Llama (tests/tiny_llama.py) as a loaded base variant."""
    return tiny_base(store.get("models", "smollm2-135m"))


@pytest.fixture
def lora_case(specs: Path) -> Case:
    (specs / "profiles" / "forget.yaml").write_text(PROFILE)
    return next(c for c in expand(SpecStore(specs), "forget") if c.method.name == "lora")


@pytest.fixture(autouse=True)
def _fresh_cache() -> Any:
    off_task.forget_cached_losses()
    yield
    off_task.forget_cached_losses()


def _figures(lora_case: Case, base: LoadedBase, model: Any) -> Any:
    data = load_off_task_data(lora_case)
    assert data.general_text is not None
    fmt = PromptFormat(base.tokenizer, chat=False)
    return general_text_figures(lora_case, base, model, fmt, data.general_text, "cpu", "fp32")


def test_the_untouched_base_forgets_nothing(lora_case: Case, tiny: LoadedBase) -> None:
    figures = _figures(lora_case, tiny, copy.deepcopy(tiny.model))  # what a base case scores
    assert figures["forgetting"] == 0.0
    assert figures["before_loss"] == figures["after_loss"] > 5  # random weights: about ln(49152)
    assert figures["documents"] == 6 and 6 < figures["tokens"] <= 6 * 47
    assert figures["max_tokens"] == 48 and figures["task"] == "coqa_passages"


def test_lora_before_training_is_the_identity_and_forgets_nothing(lora_case: Case, tiny: LoadedBase) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(copy.deepcopy(tiny.model), LoraConfig(r=4, target_modules="all-linear"))
    assert all(not p.detach().any() for n, p in model.named_parameters() if "lora_B" in n)
    assert _figures(lora_case, tiny, model)["forgetting"] == pytest.approx(0.0, abs=1e-6)


def test_a_model_trained_to_overfit_one_example_forgets(lora_case: Case, tiny: LoadedBase) -> None:
    model = copy.deepcopy(tiny.model).train()
    ids = torch.tensor(
        [tiny.tokenizer("Sentence: a gripping, funny film.\nSentiment: positive")["input_ids"]]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(30):
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert loss.detach().item() < 1.0  # it learned the example by heart ...
    figures = _figures(lora_case, tiny, model.eval())
    assert figures["forgetting"] > 1.0  # ... and general text became far less predictable
    assert figures["forgetting"] == pytest.approx(figures["after_loss"] - figures["before_loss"])


def test_prompt_tuning_is_measured_against_the_base_without_any_adapter(
    lora_case: Case, tiny: LoadedBase
) -> None:
    """ "Before" is the untouched base model, never the trained peft model with its adapter disabled;
    "after" is the peft model with its virtual tokens."""
    from peft import PromptTuningConfig, get_peft_model

    torch.manual_seed(1)
    model = get_peft_model(
        copy.deepcopy(tiny.model), PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)
    )
    with torch.no_grad():  # a trained soft prompt: far from any token's embedding
        model.prompt_encoder["default"].embedding.weight.mul_(40.0)
    figures = _figures(lora_case, tiny, model)
    fmt = PromptFormat(tiny.tokenizer, chat=False)
    texts = [e.target for e in load_off_task_data(lora_case).general_text.held_out]  # type: ignore[union-attr]

    def loss(of: Any) -> float:
        return mean_token_loss(
            of, fmt, texts, max_tokens=48, batch_size=4, device="cpu", precision="fp32"
        ).loss

    assert figures["before_loss"] == loss(tiny.model)
    assert figures["after_loss"] == loss(model) != figures["before_loss"]
    assert figures["forgetting"] != 0


def test_scoring_outside_the_task_gives_each_score_and_computes_before_once(
    lora_case: Case, tiny: LoadedBase, monkeypatch: pytest.MonkeyPatch
) -> None:
    import peftcore.score.general_text as general_text

    calls: list[Any] = []
    real = general_text.mean_token_loss

    def counted(model: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(general_text, "mean_token_loss", counted)
    data = load_off_task_data(lora_case)
    fmt = PromptFormat(tiny.tokenizer, chat=False)
    records: list[Record] = []
    for _ in range(2):  # two cases on the same base variant
        record: Any = {"metrics": {"held_out": {}}}
        model = copy.deepcopy(tiny.model)
        assert data.general_text is not None
        record["general_text"] = general_text_figures(
            lora_case, tiny, model, fmt, data.general_text, "cpu", "fp32"
        )
        for task, result in other_tasks_scores(lora_case, model, fmt, data, device="cpu", precision="fp32"):
            keep_scores(record, OOD_PREFIX + task, result)
        records.append(record)
    assert [m is tiny.model for m in calls] == [True, False, False]  # "before" once, on the template
    first, second = ({k: v for k, v in r["general_text"].items() if k != "seconds"} for r in records)
    assert first == second and first["forgetting"] == 0.0
    assert set(records[0]["metrics"]) == {"held_out", "ood.arc_easy"}
    assert set(records[0]["metrics"]["ood.arc_easy"]) >= {"accuracy", "accuracy_norm", "brier_score"}


def test_the_loss_is_transformers_own_causal_lm_loss_weighted_by_tokens(
    lora_case: Case, tiny: LoadedBase
) -> None:
    """The definition peft's method comparison uses: the model's own loss with ``labels`` (which
    shifts the targets by one inside transformers), per document, averaged over all tokens."""
    texts = [e.target for e in load_off_task_data(lora_case).general_text.held_out]  # type: ignore[union-attr]
    fmt = PromptFormat(tiny.tokenizer, chat=False)
    ours = mean_token_loss(
        tiny.model, fmt, texts, max_tokens=48, batch_size=4, device="cpu", precision="fp32"
    )
    total, tokens = 0.0, 0
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([tiny.tokenizer(text)["input_ids"][:48]])
            scored = ids.shape[1] - 1
            total += tiny.model(input_ids=ids, labels=ids).loss.item() * scored
            tokens += scored
    assert ours.tokens == tokens
    assert ours.loss == pytest.approx(total / tokens, abs=1e-5)
