"""Peak training memory of one case, from its parts, each shown with its formula.

The figure means what ``peftcore.measure.PeakMemory`` measures for a case: the peak above the
level before the case, where the case holds its own copy of the base model
(``LoadedBase.fresh()``), the adapter, gradients, optimizer states and the activations of a
training step. The framework's fixed cost is outside that window (``peftcore.plan.overhead``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.plan.activations import decoder_layers, head_dim, layer_activations, linears_of, text_config
from peftcore.plan.errors import PlannerError
from peftcore.plan.models import ModelInfo
from peftcore.plan.weights import base_weights, is_adapter_name
from peftcore.spec import MethodSpec, TrainingBudget

MEMORY_MODEL = """\
Memory model (bytes). N = batch x positions, L layers, h hidden, i intermediate, V vocabulary,
q = heads x head_dim, kv = kv_heads x head_dim, p = activation bytes (2 under bf16/fp16 autocast,
else 4), s = bytes of the residual stream (4 on a quantized base: peft upcasts the embeddings).
  base_weights      every parameter and buffer once (tied embeddings once) at its dtype; an NF4/FP4
                    weight of n values n/2 + n/64 absmax (fp32; with double quantization uint8, plus
                    n/16384 fp32, a 256-entry fp32 code and an offset) + a 16-entry code; an int8
                    weight n + 4 per output row. On a quantized base peft casts the rest to fp32.
  adapter_weights   the adapter's tensors: trainable parameters and frozen buffers (VeRA's projections).
  gradients         one per trainable parameter, at its dtype.
  optimizer_states  AdamW 8 per trainable parameter (2 fp32 states); 8-bit AdamW 2 + 8/256 per value
                    (fp32 states for tensors under 4096 values).
  activations       saved for backward, per position and layer: each norm 4*dim + 4 (fp32 upcast,
                    rsqrt); attention p*(2q + 2kv) + 4*heads (+ the mask p*positions; with a mask,
                    i.e. padding, K/V are repeated per head: kv = q); MLP 3*i at the projections'
                    output bytes (p, or the input's dtype where the layer casts back: Linear4bit,
                    VeRA, VB-LoRA, LoHa, LoKr, OFT); per adapted linear: LoRA, rsLoRA, AdaLoRA,
                    VB-LoRA p*in + p*r (+ the dropout noise, at the adapter's dtype on the CPU, 1 byte
                    on CUDA); DoRA + 2*p*out; VeRA noise + p*r + p*out; LoHa, LoKr, OFT p*in; IA3
                    p*out (4*in on feed-forward layers); a trained linear p*in; an int8 linear on the
                    CPU its input (bitsandbytes keeps it). Times N*L, plus the final norm and RoPE.
                    Gradient checkpointing: s*h per position per layer, plus one layer.
  autocast_copies   under autocast, the p-byte copy of every float weight used in a matmul that is
                    kept for backward: all linears, lm_head, the adapters' matrices, VeRA's sliced
                    projections, LoHa's and LoKr's delta weight, DoRA's second base weight (it
                    recomputes the base output on the dropped input). One layer's worth with
                    gradient checkpointing.
  loss_logits       12*N*V: at the start of backward the fp32 log-softmax output, its incoming
                    gradient and its input gradient are alive together (the loss upcasts logits).
  optimizer_step    gradients + the step's temporaries (CPU AdamW: 2 x the largest trainable tensor;
                    CUDA foreach AdamW: all trainable parameters once more, fp32).
  peak_case         base + adapter + optimizer states + max(activations + autocast copies + loss
                    logits (+ the output head's gradient when it trains), optimizer step) (+ DoRA's
                    weight-norm temporaries: 3 fp32 copies of its largest weight).
  framework         the process before any case (interpreter, libraries, kernels): a measured
                    constant per device, added for the budget: peak_process = peak_case + framework.
The prediction is the peak of live tensors. On the CPU, PeakMemory reads the resident set, which
also holds what glibc's malloc keeps after frees (see tests/perf/test_planner_vs_measured.py).
"""


@dataclass(frozen=True)
class MemoryPart:
    """One term of the memory model: its size, and how it was computed (one line)."""

    name: str
    bytes: int
    formula: str


def memory_parts(
    info: ModelInfo,
    method: MethodSpec,
    budget: TrainingBudget,
    model: Any,
    precision: str,
    device: str,
    padded: bool,
) -> tuple[list[MemoryPart], int, list[str]]:
    """The memory parts of one training case, its peak in bytes, and notes for the reader.

    ``model`` is the meta model ``apply_meta`` made trainable; ``precision`` the activation
    precision (bf16, fp16, fp32). PlannerError for an optimizer the model does not know.
    """
    import torch

    notes: list[str] = []
    quant = method.base.quantization
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    # -- base weights
    base_bytes, base_formula, float_itemsize = base_weights(base_model, method.base, info.dtype)
    parts = [MemoryPart("base_weights", base_bytes, base_formula)]
    if method.tuner == "none":
        notes.append("no training: the case holds only its copy of the model (evaluation is not modelled)")
        return parts, base_bytes, notes
    # -- adapter, gradients, optimizer
    trainable = [p for p in model.parameters() if p.requires_grad]
    adapter = _adapter_tensors_in_memory(model) if method.is_peft else []
    adapter_bytes = sum(t.numel() * t.element_size() for t in adapter)
    parts.append(
        MemoryPart("adapter_weights", adapter_bytes, f"{len(adapter)} adapter tensors at their dtype")
    )
    grad_bytes = sum(p.numel() * p.element_size() for p in trainable)
    parts.append(MemoryPart("gradients", grad_bytes, "one gradient per trainable parameter, at its dtype"))
    opt_bytes, opt_formula = _optimizer_states(trainable, budget.optimizer)
    parts.append(MemoryPart("optimizer_states", opt_bytes, opt_formula))
    # -- activations
    text = text_config(info.config)
    p = 2 if precision in ("bf16", "fp16") else 4
    autocast = p < float_itemsize
    residual = 4 if quant != "none" else float_itemsize  # peft casts a quantized base's embeddings to fp32
    batch, seq = budget.batch_size, budget.max_length
    extra_tokens = 0
    kv_extra = 0
    peft_config = getattr(model, "peft_config", {}).get("default")
    if peft_config is not None and peft_config.is_prompt_learning:
        if method.tuner == "prefix_tuning":
            kv_extra = peft_config.num_virtual_tokens
        else:
            extra_tokens = peft_config.num_virtual_tokens * peft_config.num_transformer_submodules
    tokens = batch * (seq + extra_tokens)
    layers = decoder_layers(base_model, text.num_hidden_layers)
    layer = layers[min(1, len(layers) - 1)]
    work = layer_activations(text, layer, method, p, residual, autocast, device, seq, kv_extra, padded)
    n_layers = text.num_hidden_layers
    hidden = text.hidden_size
    vocab = text.vocab_size
    rope = 2 * 4 * head_dim(text)  # cos and sin, fp32, shared by every layer
    final_norm = 4 * hidden + 4
    lm_head = base_model.get_output_embeddings()
    lm_trainable = bool(lm_head is not None and lm_head.weight.requires_grad)
    lm_copy = p * hidden * vocab if autocast else 0
    lm_input = p * hidden if lm_trainable else 0
    if budget.gradient_checkpointing:
        saved = tokens * (n_layers * residual * hidden + work.per_token + rope + final_norm + lm_input)
        copies = work.per_layer + lm_copy
        act_formula = (
            f"N*(L*{residual}*h + one layer {work.per_token} + final norm) with gradient checkpointing"
        )
    else:
        saved = tokens * (n_layers * work.per_token + rope + final_norm + lm_input)
        copies = n_layers * work.per_layer + lm_copy
        act_formula = f"N*L*{work.per_token} per token and layer (" + "; ".join(work.lines) + ") + final norm"
    parts.append(MemoryPart("activations", saved, act_formula))
    parts.append(
        MemoryPart(
            "autocast_copies",
            copies,
            f"{p}-byte copies of the linear weights kept for backward under autocast"
            if autocast
            else "none: no autocast (weights are used in their own dtype)",
        )
    )
    logits = 12 * tokens * vocab
    parts.append(
        MemoryPart("loss_logits", logits, "12*N*V: fp32 log-softmax output, its gradient and input gradient")
    )
    lm_grad = lm_head.weight.numel() * lm_head.weight.element_size() if lm_trainable else 0
    backward = saved + copies + logits + lm_grad
    # -- optimizer step
    largest = max((t.numel() * t.element_size() for t in trainable), default=0)
    if device.startswith("cuda"):
        step_temp = sum(t.numel() * 4 for t in trainable) if budget.optimizer == "adamw_torch" else 0
    else:
        step_temp = 2 * largest if budget.optimizer == "adamw_torch" else 0
    parts.append(MemoryPart("optimizer_step", grad_bytes + step_temp, "gradients + AdamW step temporaries"))
    transient = _dora_transient(layer) if any(lin.dora for lin in linears_of(layer, method)) else 0
    if transient:
        parts.append(
            MemoryPart(
                "dora_transient",
                transient,
                "DoRA weight-norm temporaries: 3 fp32 copies of the largest adapted weight",
            )
        )
    peak = base_bytes + adapter_bytes + opt_bytes + max(backward + transient, grad_bytes + step_temp)
    if kv_extra:
        notes.append(f"prefix tuning: keys and values are {kv_extra} positions longer than the input")
    if extra_tokens:
        notes.append(
            f"prompt tuning: every layer and the logits see {extra_tokens} more positions per sequence"
        )
    if torch.device(device).type == "cuda":
        notes.append("CUDA: the framework constant (CUDA context) is not measured here and is counted as 0")
    return parts, peak, notes


def _dora_transient(layer: Any) -> int:
    """DoRA's weight-norm temporaries: 3 fp32 copies of the layer's largest adapted weight."""
    import torch

    largest = 0
    for module in layer.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Linear):
            largest = max(largest, base.in_features * base.out_features)
    return 3 * 4 * largest


def _adapter_tensors_in_memory(model: Any) -> list[Any]:
    """The adapter's parameters and buffers (what get_peft_model added to the base)."""
    named = [*model.named_parameters(), *model.named_buffers()]  # shared tensors once
    return [t for name, t in named if t.requires_grad or is_adapter_name(name)]


def _optimizer_states(trainable: Sequence[Any], optimizer: str) -> tuple[int, str]:
    """Bytes of the optimizer's states for ``trainable`` and the formula; PlannerError for an
    optimizer other than adamw_torch (adamw) and adamw_bnb_8bit."""
    if optimizer == "adamw_bnb_8bit":
        total = 0
        for t in trainable:
            n = t.numel()
            total += 2 * n + 2 * 4 * math.ceil(n / 256) if n >= 4096 else 8 * n
        return (
            total,
            "8-bit AdamW: 2 uint8 states + fp32 absmax per 256 values (fp32 states under 4096 values)",
        )
    if optimizer in ("adamw_torch", "adamw"):
        return sum(
            8 * t.numel() for t in trainable
        ), "AdamW: exp_avg and exp_avg_sq, fp32, per trainable parameter"
    raise PlannerError(f"unknown optimizer {optimizer!r}; expected adamw_torch or adamw_bnb_8bit")
