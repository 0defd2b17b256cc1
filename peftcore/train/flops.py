"""Model FLOPs of a training run, and the device's matmul peak they are a fraction of (MFU).

Counted from the model config (a decoder of gated-MLP blocks: Llama, Gemma, Qwen, Mistral), the
way model FLOPs utilization is usually counted (PaLM, appendix B): the work the loss needs,
not what the hardware did, so recomputation under gradient checkpointing and the LM head at
positions without a label are not counted.

Per real token, with ``N`` the decoder's matmul weights and ``P`` an adapter's trainable
parameters: forward ``2N``, gradients of the inputs ``2N``, gradients of the weights ``2N``
only where the weights train (full fine-tuning), and ``6P`` for the adapter. Causal attention
adds ``2 L h d n`` forward for a sequence of ``n`` tokens per token summed over the sequence
(``2 L h d n**2`` a sequence), times three with its backward. The LM head (``d x V``)
counts ``4 d V`` per labeled token, ``6 d V`` when it trains.

The peak is measured, not looked up: the best of a few square matmuls on the same device, once
per process, in every precision the device could train in (``peftcore.device.training_candidates``,
and the one chosen). MFU divides by the best of them, so a run in a slow precision shows as low
utilization; the chosen precision's own peak is kept beside it.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Shape:
    """What the count needs of a model config."""

    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config: Any) -> Shape:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = int(text.num_attention_heads)
        return cls(
            layers=int(text.num_hidden_layers),
            hidden=int(text.hidden_size),
            heads=heads,
            kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
            head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
            intermediate=int(text.intermediate_size),
            vocab=int(text.vocab_size),
        )

    @property
    def decoder_matmul_params(self) -> int:
        """q, k, v, o and the gated MLP's three projections, over every layer."""
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        return self.layers * (attention + 3 * self.hidden * self.intermediate)


def training_flops(
    shape: Shape,
    *,
    tokens: int,
    labeled_tokens: int,
    squared_lengths: int,
    adapter_params: int,
    full: bool,
) -> int:
    """Model FLOPs of training on ``tokens`` real tokens, ``labeled_tokens`` of them with a loss.

    ``squared_lengths`` is the sum of each sequence's real length squared (the attention term);
    ``adapter_params`` the trainable parameters of a peft adapter (0 for full fine-tuning,
    where ``full`` counts the weights' own gradients instead).

    >>> s = Shape(layers=30, hidden=576, heads=9, kv_heads=3, head_dim=64, intermediate=1536, vocab=49152)
    >>> s.decoder_matmul_params + s.hidden * s.vocab  # SmolLM2-135M: 134.5M with its 35k norm weights
    134479872
    >>> training_flops(s, tokens=1, labeled_tokens=0, squared_lengths=0, adapter_params=0, full=False)
    424673280
    """
    n = shape.decoder_matmul_params
    per_token = (6 if full else 4) * n + 6 * adapter_params
    attention = 3 * 2 * shape.layers * shape.heads * shape.head_dim * squared_lengths
    head = (6 if full else 4) * shape.hidden * shape.vocab * labeled_tokens
    return per_token * tokens + attention + head


@functools.cache
def peak_matmul_flops(device: str, precision: str) -> float:
    """The best FLOP/s of a square matmul in ``precision`` on ``device`` (measured once)."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    size = 2048 if device == "cpu" else 8192
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    best = float("inf")
    for _ in range(2):  # warm-up: first-call kernels and allocations
        torch.matmul(a, b)
    for _ in range(5):
        sync()
        start = time.perf_counter()
        torch.matmul(a, b)
        sync()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def training_peaks(device: str, precision: str) -> dict[str, float]:
    """The measured peak (:func:`peak_matmul_flops`) of each precision ``device`` could train in,
    and of ``precision`` (the one the run trains in) if that is not among them."""
    from peftcore.device import training_candidates

    candidates, _ = training_candidates(device)
    names = dict.fromkeys((*candidates, precision))
    return {name: peak_matmul_flops(device, name) for name in names}


def utilization_figures(achieved: float, peaks: Mapping[str, float], precision: str) -> dict[str, Any]:
    """MFU of ``achieved`` FLOP/s against the best of ``peaks`` (per precision), with the
    precision that reached it and the peak of ``precision`` (the run's) beside it.

    >>> utilization_figures(1e11, {"fp32": 3.2e11, "bf16": 1.8e11}, "bf16")["mfu"]
    0.3125
    """
    best = max(peaks, key=lambda name: peaks[name])
    return {
        "peak_flops_per_second": round(peaks[best]),
        "peak_precision": best,
        "precision_peak_flops_per_second": round(peaks[precision]) if precision in peaks else None,
        "mfu": round(achieved / peaks[best], 4),
    }
