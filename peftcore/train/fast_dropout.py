"""Dropout with a cheaper mask on the CPU, swapped in for training (``training.fast_dropout``).

Written by hand because torch's CPU dropout draws its mask with ``bernoulli_``, which costs
about 4 ns an element here: LoRA's ``lora_dropout`` (0.05 in the shipped specs) runs once per
adapted layer on a [batch, length, hidden] input, and those masks were 22 % of a LoRA step of
SmolLM2-135M (torch.profiler, docs/training-speed.md). Drawing 31-bit integers
with ``random_`` and comparing them with ``p * 2**31`` gives the same Bernoulli(1 - p) mask,
exact to 5e-10 in ``p``, at about half the cost (forward and backward: 2.2 ms against 3.4 ms on
a 4 x 256 x 576 input). Only the random stream differs from torch's, so a fixed seed learns
as a different seed would, not less. On CUDA torch's Philox dropout is already cheap: this is
not installed there.

peft builds its adapter dropouts as ``nn.Dropout`` modules (``nn.Identity`` when the
probability is 0); :func:`installed` replaces every ``nn.Dropout`` of a model with
:class:`FastDropout` for the duration of training and puts the originals back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_BITS = 31  # torch's random_() on int32 draws uniformly from [0, 2**31)


class FastDropout(nn.Module):
    """``nn.Dropout(p)`` (not in place) with its mask drawn from 31-bit integers."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.threshold = round(p * 2**_BITS)  # an element is dropped when its draw is below it
        self.scale = 1.0 / (1.0 - p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        draws = torch.empty(x.shape, dtype=torch.int32, device=x.device).random_()
        # Multiplying by the scaled mask keeps autograd's backward a single multiplication.
        return x * draws.ge(self.threshold).to(x.dtype).mul_(self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p}"


@contextmanager
def installed(model: Any, device: str, *, enabled: bool = True) -> Iterator[int]:
    """Every ``nn.Dropout`` of ``model`` replaced by a :class:`FastDropout` on a CPU, for the
    ``with`` block; yields how many were replaced (0 when not ``enabled``, on other devices, or
    without dropout)."""
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    if enabled and device == "cpu":
        for parent in model.modules():
            for name, child in list(parent.named_children()):
                if type(child) is nn.Dropout and child.p > 0 and not child.inplace:
                    fast = FastDropout(child.p)
                    fast.train(child.training)
                    setattr(parent, name, fast)
                    swapped.append((parent, name, child))
    try:
        yield len(swapped)
    finally:
        for parent, name, original in swapped:
            original.train(getattr(parent, name).training)
            setattr(parent, name, original)
