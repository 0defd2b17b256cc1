"""Deployment variants by name: what a profile's ``deploy.variants`` may list, and what each is.

Pure data (no torch, no gguf import), so a spec is checked at collection. A variant is derived
from a trained case's saved adapter, never by training again (:mod:`peftcore.pipeline.deploy`):

    merged       peft's merge_and_unload into a full-precision reload of the base
    int8, nf4, fp4
                 the merged model quantized after training by bitsandbytes (LLM.int8, 4-bit)
    gguf-<type>  the merged model written as a GGUF file by the ``gguf`` package, in a type it
                 can produce in Python (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1)

Every variant but ``merged`` starts from the merged model, so a tuner that cannot merge (prompt
and prefix tuning: virtual tokens, no weight to fold them into) has none of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftcore.errors import suggest

SEPARATOR = "@"  # a variant's method name in gates and reports: lora@nf4

# GGUF tensor types gguf.quants can write in Python (a test checks each against the package).
# K-quants (Q4_K_M, ...) and i-quants are produced by llama.cpp's llama-quantize, not here.
GGUF_TYPES: dict[str, str] = {
    "f32": "F32",
    "f16": "F16",
    "bf16": "BF16",
    "q8_0": "Q8_0",
    "q4_0": "Q4_0",
    "q4_1": "Q4_1",
    "q5_0": "Q5_0",
    "q5_1": "Q5_1",
}
BNB_TYPES = ("int8", "nf4", "fp4")

# peft tuners whose adapter is virtual tokens or a prompt encoder (peft's prompt-learning
# types): nothing to merge into the weights. A test checks this against peft's own configs.
NOT_MERGEABLE_TUNERS = frozenset(
    {
        "prompt_tuning",
        "prefix_tuning",
        "p_tuning",
        "multitask_prompt_tuning",
        "adaption_prompt",
        "cpt",
        "cartridge",
    }
)


@dataclass(frozen=True)
class Variant:
    """One deployment variant: its name, its kind (merged | bnb | gguf) and its type."""

    name: str
    kind: str
    type: str  # "" for merged; int8/nf4/fp4; the GGUF type's name in gguf (F16, Q8_0, ...)


def parse_variant(name: str) -> Variant:
    """``"gguf-q8_0"`` -> Variant("gguf-q8_0", "gguf", "Q8_0"). ValueError says what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"expected a variant name, got {name!r}")
    if name == "merged":
        return Variant(name, "merged", "")
    if name in BNB_TYPES:
        return Variant(name, "bnb", name)
    head, _, kind = name.partition("-")
    if head == "gguf" and kind:
        lowered = kind.lower()
        if lowered in GGUF_TYPES:
            return Variant(f"gguf-{lowered}", "gguf", GGUF_TYPES[lowered])
        raise ValueError(
            f"the gguf package cannot write GGUF type {kind!r} in Python (K-quants and i-quants need "
            f"llama.cpp's llama-quantize); it writes: {', '.join('gguf-' + t for t in GGUF_TYPES)}"
        )
    known = ["merged", *BNB_TYPES, *("gguf-" + t for t in GGUF_TYPES)]
    raise ValueError(f"unknown deployment variant {name!r}; " + suggest(name, known))


def mergeable(tuner: str) -> bool:
    """Whether a method's tuner leaves weights a merged model can be made of (``none``, the
    untrained base, is its own merged model; ``full`` fine-tuning is one already)."""
    return tuner not in NOT_MERGEABLE_TUNERS


def variant_method(method: str, variant: str) -> str:
    """The method name a variant goes by in gates and reports: ``lora@nf4``."""
    return f"{method}{SEPARATOR}{variant}"


def split_variant_method(name: str) -> tuple[str, str | None]:
    """``"lora@nf4"`` -> ("lora", "nf4"); ``"lora"`` -> ("lora", None)."""
    method, sep, variant = name.partition(SEPARATOR)
    return (method, variant) if sep else (name, None)
