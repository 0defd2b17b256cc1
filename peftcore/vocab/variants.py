"""Deployment variants by name: what a profile's ``deploy.variants`` may list, and what each is.

Pure data (no torch, no gguf import), so a spec is checked at collection. A variant is derived
from a trained case's saved adapter, never by training again (:mod:`peftcore.pipeline.deploy`):

    merged       peft's merge_and_unload into a full-precision reload of the base
    int8, nf4, fp4
                 the merged model quantized after training by bitsandbytes (LLM.int8, 4-bit)
    gguf-<type>  the merged model written as a GGUF file by the ``gguf`` package, in a type it
                 can produce in Python (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1)
    gguf-<k-quant>
                 the F16 GGUF file quantized by llama.cpp's ``llama-quantize`` (q4_k_m, q5_k_m,
                 q6_k, ...: the K-quants practitioners ship), once its tools are built
                 (``make llama-cpp``)

Every variant but ``merged`` starts from the merged model, so a tuner that cannot merge (prompt
and prefix tuning: virtual tokens, no weight to fold them into) has none of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from peftcore.errors import suggest

SEPARATOR = "@"  # a variant's method name in gates and reports: lora@nf4

# GGUF tensor types gguf.quants can write in Python (a test checks each against the package).
# K-quants and i-quants are produced by llama.cpp's llama-quantize (LLAMA_QUANTIZE_TYPES).
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
# Types llama-quantize makes from an F16 GGUF, in llama.cpp's names (a test checks each against
# the built tool's --help). K-quants only: most i-quants need an importance matrix (imatrix),
# which needs calibration text and a llama-imatrix run peftcore does not do.
LLAMA_QUANTIZE_TYPES: dict[str, str] = {
    "q2_k": "Q2_K",
    "q2_k_s": "Q2_K_S",
    "q3_k_s": "Q3_K_S",
    "q3_k_m": "Q3_K_M",
    "q3_k_l": "Q3_K_L",
    "q4_k_s": "Q4_K_S",
    "q4_k_m": "Q4_K_M",
    "q5_k_s": "Q5_K_S",
    "q5_k_m": "Q5_K_M",
    "q6_k": "Q6_K",
}
BNB_TYPES = ("int8", "nf4", "fp4")
WRITERS = ("peft", "bitsandbytes", "gguf", "llama-quantize")  # what makes a variant

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
    """One deployment variant: its name, its kind (merged | bnb | gguf), its type and what makes
    it (``writer``: peft's merge, bitsandbytes on load, the ``gguf`` package, or llama-quantize
    from the F16 file the gguf package writes)."""

    name: str
    kind: str
    type: str  # "" for merged; int8/nf4/fp4; the GGUF type (F16, Q8_0; llama-quantize's Q4_K_M, ...)
    writer: str


def parse_variant(name: str) -> Variant:
    """``"gguf-q8_0"`` -> Variant("gguf-q8_0", "gguf", "Q8_0", "gguf"); ``"gguf-Q4_K_M"`` ->
    Variant("gguf-q4_k_m", "gguf", "Q4_K_M", "llama-quantize"). ValueError says what is wrong."""
    if not isinstance(name, str):
        raise ValueError(f"expected a variant name, got {name!r}")
    if name == "merged":
        return Variant(name, "merged", "", "peft")
    if name in BNB_TYPES:
        return Variant(name, "bnb", name, "bitsandbytes")
    head, _, kind = name.partition("-")
    if head == "gguf" and kind:
        lowered = kind.lower()
        if lowered in GGUF_TYPES:
            return Variant(f"gguf-{lowered}", "gguf", GGUF_TYPES[lowered], "gguf")
        if lowered in LLAMA_QUANTIZE_TYPES:
            return Variant(f"gguf-{lowered}", "gguf", LLAMA_QUANTIZE_TYPES[lowered], "llama-quantize")
        raise ValueError(
            f"unknown GGUF type {kind!r}; the gguf package writes "
            f"{', '.join('gguf-' + t for t in GGUF_TYPES)}; llama.cpp's llama-quantize makes "
            f"{', '.join('gguf-' + t for t in LLAMA_QUANTIZE_TYPES)} (i-quants are not offered)"
        )
    known = ["merged", *BNB_TYPES, *("gguf-" + t for t in (*GGUF_TYPES, *LLAMA_QUANTIZE_TYPES))]
    raise ValueError(f"unknown deployment variant {name!r}; " + suggest(name, known))


def needs_llama_quantize(names: Sequence[str]) -> list[tuple[int, str]]:
    """(index, name) of the variants in ``names`` that llama-quantize makes (unknown names are
    left to :func:`parse_variant`'s check)."""
    found = []
    for index, name in enumerate(names):
        try:
            if parse_variant(name).writer == "llama-quantize":
                found.append((index, name))
        except ValueError:
            continue
    return found


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
