"""Bytes of the weights a training case holds: the base model's copy, by dtype or quantization.

A quantized base (``nf4``, ``fp4``, ``int8``) is not quantized here: the meta model keeps the
``nn.Linear`` shapes that bitsandbytes keeps too, and the bytes bitsandbytes would hold for each
quantized weight (packed values, block scales, code tables) are counted from its shape. The tests
check every byte against real bitsandbytes models.
"""

from __future__ import annotations

import math
from typing import Any

from peftcore.plan.models import build_meta_model
from peftcore.spec import BaseOptions

# Parameter and buffer names that belong to an adapter, not to the base model.
ADAPTER_KEYS = ("lora_", "vera_", "vblora_", "hada_", "lokr_", "oft_", "ia3_", "prompt_encoder", "ranknum")
BYTES_PER_VALUE = {"fp32": 4, "bf16": 2, "fp16": 2}


def is_adapter_name(name: str) -> bool:
    """True for a parameter or buffer that get_peft_model added (``...lora_A.default.weight``)."""
    return any(key in name for key in ADAPTER_KEYS)


def base_weight_bytes(config: Any, base: BaseOptions, dtype: str = "fp32", *, prepared: bool = True) -> int:
    """Bytes of a base model: held in ``dtype`` (fp32, bf16, fp16) when not quantized, else as
    bitsandbytes stores ``base.quantization`` with the other modules in the compute dtype, as
    ``load_base`` holds it; ``prepared`` counts those other parameters in fp32, as a training case
    holds them after peft's ``prepare_model_for_kbit_training``."""
    model = build_meta_model(config, dtype if base.quantization == "none" else base.compute_dtype)
    return base_weights(model, base, dtype, prepared=prepared)[0]


def base_weights(
    base_model: Any, options: BaseOptions, dtype: str, *, prepared: bool = True
) -> tuple[int, str, int]:
    """Bytes of the base model's copy (adapter tensors left out), the formula in words, and the
    itemsize of its float weights (4 on a quantized base, which peft upcasts)."""
    import torch

    quant = options.quantization
    compute = BYTES_PER_VALUE[options.compute_dtype]
    held = BYTES_PER_VALUE[dtype]
    owners = {name: module for name, module in base_model.named_modules()}
    lm_head = base_model.get_output_embeddings()
    total = quantized = floats = 0
    named = [*base_model.named_parameters(), *base_model.named_buffers()]  # tied tensors once
    for name, tensor in named:
        if is_adapter_name(name):
            continue
        owner = owners.get(name.rsplit(".", 1)[0]) if "." in name else None
        n = tensor.numel()
        # transformers quantizes every nn.Linear but the output head (and its tied twin)
        linear = owner if type(owner) is torch.nn.Linear and owner is not lm_head else None
        if quant != "none" and linear is not None and name.endswith(".weight"):
            total += quantized_weight_bytes(n, linear.out_features, quant, options.double_quant)
            quantized += n
        elif tensor.is_floating_point():
            if quant == "none":
                size = held if isinstance(tensor, torch.nn.Parameter) else tensor.element_size()
            elif isinstance(tensor, torch.nn.Parameter):
                # prepare_model_for_kbit_training casts fp16/bf16 parameters to fp32
                size = 4 if prepared else compute
            else:
                size = tensor.element_size() if tensor.dtype == torch.float32 else compute
            total += n * size
            floats += n
        else:
            total += n * tensor.element_size()
    if quant == "none":
        formula = f"{floats:,} values at {dtype} (tied weights once)"
    elif quant in ("nf4", "fp4"):
        dq = "double-quantized absmax" if options.double_quant else "fp32 absmax"
        formula = f"{quantized:,} {quant} values (n/2 bytes + {dq} per 64) + {floats:,} others in fp32"
    else:
        formula = f"{quantized:,} int8 values + fp32 scale per row + {floats:,} others in fp32"
    return total, formula, held if quant == "none" else 4


def quantized_weight_bytes(n: int, rows: int, quant: str, double_quant: bool) -> int:
    """Bytes bitsandbytes holds for one quantized weight of ``n`` values and ``rows`` output rows
    (``quant`` nf4, fp4 or int8)."""
    if quant == "int8":
        return n + 4 * rows  # int8 values + fp32 row scale (SCB)
    blocks = math.ceil(n / 64)
    packed = math.ceil(n / 2)
    code = 16 * 4  # the 4-bit code table of each QuantState
    if not double_quant:
        return packed + 4 * blocks + code
    nested = math.ceil(blocks / 256)
    # absmax as uint8, nested absmax fp32, the nested 256-entry fp32 code, the fp32 offset
    return packed + blocks + 4 * nested + 256 * 4 + 4 + code
