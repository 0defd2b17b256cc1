"""From rendered examples to token ids, the same way for training and for scoring.

An instruct model sees the prompt as a user turn of its chat template and answers as the
assistant; a base model sees the plain prompt followed by the target. ``PromptFormat`` hides
the difference: ``context(prompt)`` is what precedes the answer, ``continuation(target)`` is
the answer as the model should produce it, and ``end`` closes a trained answer (the chat
template's end-of-turn, or EOS).

Training examples are tokenized once and cached on disk (an Arrow dataset under
``$PEFTCORE_CACHE/tokenized/<key>``), keyed by the data, the tokenizer, the template and the
maximum length, so a second run does not re-tokenize.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.data.example import Example
from peftcore.storage import cache_root

ENCODING_VERSION = 1  # bump when encode_training changes what it produces
IGNORE_INDEX = -100  # labels the loss skips (prompt tokens, padding)


@dataclass(frozen=True)
class PromptFormat:
    tokenizer: Any
    chat: bool

    @classmethod
    def for_model(cls, tokenizer: Any, chat_template: str) -> PromptFormat:
        """``chat_template`` is the model spec's setting: auto, always or never."""
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if chat_template == "always" and not has_template:
            raise ValueError("model spec says chat_template: always, but the tokenizer has no chat template")
        return cls(tokenizer, chat=has_template and chat_template != "never")

    def context(self, prompt: str) -> str:
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )

    def continuation(self, target: str) -> str:
        # Templates put a space before the answer ("Answer: Paris"); in a chat turn the
        # assistant's reply starts the message, so the space goes.
        return target.lstrip() if self.chat else target

    @property
    def end(self) -> str:
        return self.tokenizer.eos_token or ""

    def identity(self) -> str:
        """What of the tokenizer and template determines the token ids (for cache keys)."""
        tok = self.tokenizer
        backend = getattr(tok, "backend_tokenizer", None)
        spec = backend.to_str() if backend is not None else json.dumps(sorted(tok.get_vocab().items()))
        parts = [
            type(tok).__name__,
            hashlib.sha256(spec.encode()).hexdigest(),
            str(self.chat),
            hashlib.sha256((tok.chat_template or "").encode()).hexdigest() if self.chat else "",
            str(tok.eos_token),
            str(tok.bos_token),
        ]
        return hashlib.sha256("|".join(parts).encode()).hexdigest()

    # -- token ids
    def encode_context(self, prompt: str) -> list[int]:
        text = self.context(prompt)
        # A chat template already wrote any special tokens it wants.
        return list(self.tokenizer(text, add_special_tokens=not self.chat)["input_ids"])

    def encode_continuation(self, target: str) -> list[int]:
        return list(self.tokenizer(self.continuation(target), add_special_tokens=False)["input_ids"])


def encode_training(
    example: Example, fmt: PromptFormat, max_length: int, *, lm: bool
) -> dict[str, list[int]]:
    """input_ids and labels for one example: loss on the answer only (or on all text for LM).

    Over-long examples lose the start of the prompt, never the answer (a truncated answer would
    teach the model to stop mid-sentence); an answer longer than ``max_length`` keeps its start.
    """
    if lm:
        ids = list(fmt.tokenizer(example.target, add_special_tokens=True)["input_ids"])[:max_length]
        return {"input_ids": ids, "labels": list(ids)}
    context = fmt.encode_context(example.prompt)
    answer = fmt.encode_continuation(example.target)
    answer = (answer + _end_ids(fmt))[:max_length]
    room = max_length - len(answer)
    context = context[-room:] if room > 0 else []
    return {"input_ids": context + answer, "labels": [IGNORE_INDEX] * len(context) + answer}


# More than this share of training examples left without a word of their prompt is refused:
# the case would learn answers unconditioned on their questions.
PROMPT_LOST_LIMIT = 0.1


@dataclass(frozen=True)
class Truncation:
    """What ``max_length`` cut from the training examples (answer-only loss keeps the answer).

    ``prompt_cut``: examples that lost the start of their prompt; ``prompt_lost``: examples that
    kept none of the prompt's own words (at most the chat template's tokens after it);
    ``answer_cut``: examples whose answer (or, for language modelling, text) was cut.
    """

    examples: int
    prompt_cut: int
    prompt_lost: int
    answer_cut: int

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def refusal(self, max_length: int) -> str | None:
        """Why the case must not train with these examples, or None."""
        if self.examples and self.prompt_lost > PROMPT_LOST_LIMIT * self.examples:
            return (
                f"{max_length} tokens leave no word of the prompt in {self.prompt_lost} of "
                f"{self.examples} training examples (the answers alone would be trained); expected a "
                f"max_length that keeps the prompt of at least {1 - PROMPT_LOST_LIMIT:.0%} of them"
            )
        return None


def truncation(examples: Sequence[Example], fmt: PromptFormat, max_length: int, *, lm: bool) -> Truncation:
    """Count what :func:`encode_training` cuts from ``examples`` at ``max_length``."""
    prompt_cut = prompt_lost = answer_cut = 0
    for example in examples:
        if lm:
            text = fmt.tokenizer(example.target, add_special_tokens=True)["input_ids"]
            answer_cut += len(text) > max_length
            continue
        context = fmt.encode_context(example.prompt)
        labels = encode_training(example, fmt, max_length, lm=False)["labels"]
        kept = sum(1 for label in labels if label == IGNORE_INDEX)  # the prompt's tokens left
        full_answer = len(fmt.encode_continuation(example.target)) + len(_end_ids(fmt))
        answer_cut += full_answer > max_length
        if kept < len(context):
            prompt_cut += 1
            if kept <= _template_tail(fmt, example.prompt):
                prompt_lost += 1
    return Truncation(len(examples), prompt_cut, prompt_lost, answer_cut)


def _end_ids(fmt: PromptFormat) -> list[int]:
    return list(fmt.tokenizer(fmt.end, add_special_tokens=False)["input_ids"]) if fmt.end else []


def _template_tail(fmt: PromptFormat, prompt: str) -> int:
    """Tokens the context holds after the prompt's own text (a chat template's turn markers)."""
    text = fmt.context(prompt)
    end = text.rfind(prompt)
    if not prompt or end < 0:
        return 0
    tail = text[end + len(prompt) :]
    return len(fmt.tokenizer(tail, add_special_tokens=False)["input_ids"]) if tail else 0


def tokenized_train_set(
    examples: Sequence[Example], fmt: PromptFormat, max_length: int, *, lm: bool, data_key: str
) -> Any:
    """The training examples as a cached ``datasets.Dataset`` with input_ids, labels, length."""
    import datasets

    key_text = json.dumps([ENCODING_VERSION, data_key, fmt.identity(), max_length, lm])
    key = hashlib.sha256(key_text.encode()).hexdigest()[:32]
    folder = cache_root() / "tokenized" / key
    if (folder / "state.json").is_file():
        try:
            return datasets.load_from_disk(str(folder))
        except (OSError, ValueError):
            shutil.rmtree(folder, ignore_errors=True)  # damaged: rebuild below
    rows = [encode_training(ex, fmt, max_length, lm=lm) for ex in examples]
    dataset = datasets.Dataset.from_dict(
        {
            "input_ids": [r["input_ids"] for r in rows],
            "labels": [r["labels"] for r in rows],
            "length": [len(r["input_ids"]) for r in rows],
        }
    )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tok-", dir=folder.parent))
    try:
        dataset.save_to_disk(str(tmp))
        try:
            tmp.rename(folder)
        except OSError:
            if not (folder / "state.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return datasets.load_from_disk(str(folder))
