"""A randomly initialised 2-layer Llama (hidden size 64) with SmolLM2's real tokenizer: a model
that builds in milliseconds, for tests of what happens around a model (forgetting, merging,
trackers, memory), where the real 135M weights would only add time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from peftcore.models.load import LoadedBase, load_tokenizer
from peftcore.spec import BaseOptions
from peftcore.spec.types import ModelSpec


def tiny_config(tokenizer: Any) -> Any:
    """The tiny Llama's config, over the whole vocabulary of ``tokenizer``."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
    )


def tiny_base(spec: ModelSpec) -> LoadedBase:
    """The tiny Llama (seed 0, eval mode) with ``spec``'s tokenizer, as a loaded base variant."""
    import torch
    from transformers import LlamaForCausalLM

    tokenizer = load_tokenizer(spec)
    torch.manual_seed(0)
    model = LlamaForCausalLM(tiny_config(tokenizer)).eval()
    return LoadedBase(spec, BaseOptions(), model, tokenizer, 0.0, 0, "tiny-llama", "cpu")


def add_tiny_model(specs: Path, folder: Path) -> None:
    """Name the saved tiny Llama ``tiny`` in the spec directory ``specs``."""
    (specs / "models" / "tiny.yaml").write_text(
        f"description: the tiny Llama (tests/tiny_llama.py)\nsource: {{kind: local, path: {folder}}}\n"
    )
