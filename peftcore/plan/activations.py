"""What one decoder layer saves for backward: bytes per token, and weight-sized copies per layer.

The layer is read from the meta model after the method was applied, so every adapted linear is
seen with its tuner, rank, dropout and DoRA flag as peft built it. The formulas are those of
``MEMORY_MODEL`` (``peftcore.plan.memory``), term by term.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from peftcore.plan.errors import PlannerError
from peftcore.spec import MethodSpec

_LOW_RANK = {"lora", "adalora", "vblora"}
_INPUT_COPY = {"loha", "lokr", "oft"}
_WEIGHT_COPIES = {"loha": 1, "lokr": 1}  # the delta weight, cast to p, kept by F.linear
_RESTORES_DTYPE = {"vblora", "vera", "loha", "lokr", "oft"}  # output cast back to the input's dtype
_MLP_INPUT_SIDE = ("gate_proj", "up_proj", "w1", "w3", "fc1")
_INPUT_SIDE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "query_key_value", "c_attn", "w1", "w3")


@dataclass
class LayerLinear:
    """One linear of a decoder layer as the activation model sees it."""

    name: str
    n_in: int
    n_out: int
    quant: str  # none | nf4 | fp4 | int8 (transformers quantizes every linear of the layers)
    trainable: bool  # the base weight itself trains (full fine-tuning)
    adapter: str | None = None  # the peft tuner wrapping it
    rank: int = 0
    dropout: bool = False
    dora: bool = False
    feedforward: bool = False
    adapter_matrices: int = 0  # trainable adapter values in matrices (cast to p under autocast)
    adapter_itemsize: int = 4


@dataclass
class LayerActivations:
    """The activation model of one decoder layer, and its terms in words for the formula."""

    per_token: int = 0  # bytes per token of one layer
    per_layer: int = 0  # bytes per layer, independent of tokens (weight-sized copies)
    lines: list[str] = field(default_factory=list)


def text_config(config: Any) -> Any:
    """The language model's part of a config (a multimodal config nests it)."""
    getter = getattr(config, "get_text_config", None)
    return getter() if getter else config


def head_dim(text: Any) -> int:
    return int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)


def decoder_layers(model: Any, n_layers: int) -> Any:
    """The ModuleList of ``n_layers`` decoder layers; PlannerError when the model has none."""
    import torch

    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise PlannerError(f"cannot find the {n_layers} decoder layers in {type(model).__name__}")


def linears_of(layer: Any, method: MethodSpec) -> list[LayerLinear]:
    """Every linear of one decoder layer, with its adapter (if any)."""
    import torch

    quant = method.base.quantization
    found = []
    for name, module in layer.named_modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Linear):  # a peft layer (some subclass nn.Linear themselves)
            found.append(_describe_tuner_layer(name, module, base, method.tuner, quant))
        elif isinstance(module, torch.nn.Linear) and not _inside_tuner(layer, name):
            trained = bool(module.weight.requires_grad)
            found.append(LayerLinear(name, module.in_features, module.out_features, quant, trained))
    return found


def _inside_tuner(layer: Any, name: str) -> bool:
    """True for linears that belong to a peft layer (its base layer or adapter factors)."""
    parts = name.split(".")
    return any(hasattr(layer.get_submodule(".".join(parts[:i])), "base_layer") for i in range(1, len(parts)))


def _describe_tuner_layer(name: str, module: Any, base: Any, tuner: str, quant: str) -> LayerLinear:
    """A peft layer: its rank, dropout, DoRA flag and adapter matrices, read from the module."""
    import torch

    adapter = "default"
    rank = 0
    ranks = getattr(module, "r", None)
    if isinstance(ranks, Mapping):
        rank = int(ranks.get(adapter, 0))
    dropout = False
    for attr in ("lora_dropout", "vera_dropout", "vblora_dropout"):
        modules = getattr(module, attr, None)
        if modules is not None and adapter in modules:
            drop = modules[adapter]
            dropout = isinstance(drop, torch.nn.Dropout) and drop.p > 0
    dora = bool(getattr(module, "use_dora", {}).get(adapter, False))
    own = [t for n, t in module.named_parameters() if not n.startswith("base_layer.")]
    matrices = sum(t.numel() for t in own if t.requires_grad and t.dim() >= 2)
    return LayerLinear(
        name,
        base.in_features,
        base.out_features,
        quant,
        bool(base.weight.requires_grad),
        tuner,
        rank=rank,
        dropout=dropout,
        dora=dora,
        feedforward=bool(getattr(module, "is_feedforward", False)),
        adapter_matrices=matrices,
        adapter_itemsize=own[0].element_size() if own else 4,
    )


def _norms_of(layer: Any) -> list[tuple[str, int, bool]]:
    """(name, dim, weight trainable) of every normalization module in one decoder layer."""
    found = []
    for name, module in layer.named_modules():
        cls = type(module).__name__
        if cls.endswith(("RMSNorm", "LayerNorm")) and getattr(module, "weight", None) is not None:
            found.append((name, int(module.weight.shape[-1]), bool(module.weight.requires_grad)))
    return found


def _share_group(name: str) -> str:
    """Linears that read the same tensor (attention inputs, MLP inputs) share one saved input."""
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return f"{parent}:in" if leaf in _INPUT_SIDE else name


def _output_bytes(lin: LayerLinear, in_bytes: int, p: int) -> int:
    """Bytes per value of a linear's output: p under autocast, except where the layer casts back."""
    if lin.adapter in _RESTORES_DTYPE or lin.quant in ("nf4", "fp4"):
        return in_bytes  # peft's "result.to(previous_dtype)"; Linear4bit returns its input's dtype
    return p


def layer_activations(
    text: Any,
    layer: Any,
    method: MethodSpec,
    p: int,
    residual: int,
    autocast: bool,
    device: str,
    seq: int,
    kv_extra: int,
    padded: bool,
) -> LayerActivations:
    """Bytes saved for backward by one decoder layer: per token, and per layer (weight copies).

    ``p`` is the activation itemsize (2 under bf16/fp16 autocast, else 4), ``residual`` the
    residual stream's, ``seq`` the tokens per sequence, ``kv_extra`` the extra key/value
    positions of a prefix, ``padded`` whether batches carry an attention mask.
    """
    work = LayerActivations()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    q_dim, kv_dim = heads * head_dim(text), kv_heads * head_dim(text)
    # With an attention mask (padding, a prefix, a window shorter than the keys) transformers
    # repeats K/V to every head and SDPA keeps the mask, cast to p; without one it uses GQA.
    window = getattr(text, "sliding_window", None)
    masked = padded or kv_extra > 0 or bool(window and window < seq + kv_extra)
    kv_eff = q_dim if masked else kv_dim
    kv_scale = (seq + kv_extra) / seq
    mask_bytes = p * (seq + kv_extra) if masked else 0
    linears = linears_of(layer, method)
    # -- norms: fp32 upcast of the input + rsqrt per row; a trained weight also keeps the product
    norm_bytes = 0
    for name, dim, trained in _norms_of(layer):
        rows = q_dim // dim if "q_norm" in name else kv_dim // dim if "k_norm" in name else 1
        norm_bytes += rows * (4 * dim + 4 + (4 * dim if trained else 0))
    work.per_token += norm_bytes
    work.lines.append(f"norms {norm_bytes}")
    # -- attention (SDPA saves query, key, value, output and the log-sum-exp)
    attn = p * (2 * q_dim + round(2 * kv_eff * kv_scale)) + 4 * heads + mask_bytes
    work.per_token += attn
    work.lines.append(f"attention {attn}")
    # -- MLP: gate (activation input), activation output and up, in the projections' output dtype
    inter = text.intermediate_size
    mlp_in = [lin for lin in linears if lin.name.rsplit(".", 1)[-1] in _MLP_INPUT_SIDE]
    out_bytes = max((_output_bytes(lin, residual, p) for lin in mlp_in), default=p)
    mlp = 3 * out_bytes * inter
    work.per_token += mlp
    work.lines.append(f"mlp {mlp}")
    # -- linears and their adapters
    lin_tok = 0
    shared_inputs: set[str] = set()
    for lin in linears:
        in_side = lin.name.rsplit(".", 1)[-1] in _INPUT_SIDE
        in_bytes = residual if in_side else (out_bytes if "down" in lin.name else p)
        if lin.quant == "none":
            if autocast:
                work.per_layer += p * lin.n_in * lin.n_out
            if lin.trainable:
                lin_tok += p * lin.n_in
        elif lin.quant == "int8" and not device.startswith("cuda"):
            group = _share_group(lin.name)
            if group not in shared_inputs:
                shared_inputs.add(group)
                lin_tok += in_bytes * lin.n_in
        if lin.adapter is None:
            continue
        # peft casts the input to the adapter's dtype; CPU dropout keeps its noise tensor at that
        # dtype, CUDA's fused dropout a 1-byte mask
        mask = (1 if device.startswith("cuda") else lin.adapter_itemsize) * lin.n_in if lin.dropout else 0
        if autocast:
            work.per_layer += p * lin.adapter_matrices
        tuner = lin.adapter
        if tuner in _LOW_RANK:
            lin_tok += mask + p * lin.n_in + p * lin.rank
            if lin.dora:
                lin_tok += 2 * p * lin.n_out
                if lin.dropout:
                    work.per_layer += p * lin.n_in * lin.n_out
        elif tuner == "vera":
            lin_tok += mask + p * lin.rank + p * lin.n_out
            if autocast:  # the frozen shared projections, sliced and cast for each layer
                work.per_layer += p * lin.rank * (lin.n_in + lin.n_out)
        elif tuner in _INPUT_COPY:
            lin_tok += p * lin.n_in
            work.per_layer += _WEIGHT_COPIES.get(tuner, 0) * p * lin.n_in * lin.n_out
        elif tuner == "ia3":
            lin_tok += lin.adapter_itemsize * lin.n_in if lin.feedforward else p * lin.n_out
    work.per_token += lin_tok
    work.lines.append(f"linears and adapters {lin_tok}")
    return work
