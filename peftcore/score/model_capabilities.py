"""What scoring needs to know about the model it is given, a transformers or a peft model:
how many tokens a forward pass may hold, whether prompt learning adds virtual tokens, and
which forward arguments (``logits_to_keep``, a reused KV cache) it accepts."""

from __future__ import annotations

import inspect
from typing import Any

# When neither the model config nor the caller says how long an input may be.
FALLBACK_MAX_LENGTH = 2048
# Prompt-learning tuners whose virtual tokens are input embeddings (not a KV-cache prefix).
_EMBEDDING_PROMPT_TUNERS = ("PROMPT_TUNING", "P_TUNING")


def base_model(model: Any) -> Any:
    """The transformers model under a peft model (the model itself when it is not one)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _forward_parameters(model: Any) -> frozenset[str]:
    """Names the base model's ``forward`` takes (none when its signature cannot be read)."""
    try:
        return frozenset(inspect.signature(base_model(model).forward).parameters)
    except (TypeError, ValueError):
        return frozenset()


def _peft_config(model: Any) -> Any:
    """The active peft config of a PeftModel, else None."""
    return getattr(model, "active_peft_config", None) if hasattr(model, "peft_config") else None


def soft_prompt_tuner(model: Any) -> bool:
    """True for prompt tuning / p-tuning, whose virtual tokens are input embeddings."""
    config = _peft_config(model)
    return config is not None and str(getattr(config.peft_type, "value", "")) in _EMBEDDING_PROMPT_TUNERS


def virtual_tokens(model: Any) -> int:
    """How many positions a prompt-learning adapter adds in front of the input (0 otherwise)."""
    config = _peft_config(model)
    if config is None or not getattr(config, "is_prompt_learning", False):
        return 0
    return int(config.num_virtual_tokens)


def max_input_length(model: Any) -> int:
    """Tokens a forward pass may hold: the model's positions minus any virtual tokens."""
    config: Any = getattr(base_model(model), "config", None)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    positions = getattr(text_config, "max_position_embeddings", None) or FALLBACK_MAX_LENGTH
    return max(1, int(positions) - virtual_tokens(model))


def accepts_logits_to_keep(model: Any) -> bool:
    """Whether the forward pass can compute the logits of the last positions only."""
    return "logits_to_keep" in _forward_parameters(model)


def can_share_context(model: Any) -> bool:
    """Whether a context can be run once and its KV cache reused for what follows it (each
    choice of a group, each row of a generation batch).

    Not for prompt-learning adapters: peft injects their virtual tokens (or prefix cache) on
    every forward call, so a second call on top of a cache would inject them twice.
    """
    if virtual_tokens(model):
        return False
    parameters = _forward_parameters(model)
    return {"logits_to_keep", "position_ids", "past_key_values"} <= parameters
