"""The project's own errors: each one is a single line a user can act on."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path


class PeftcoreError(Exception):
    """Base class: anything peftcore raises on purpose."""


class SpecError(PeftcoreError, ValueError):
    """A spec file is malformed: names the file, the key and what was expected.

    >>> str(SpecError("methods/lora.yaml", "adapter.r", "expected an integer, got 'x'"))
    "methods/lora.yaml: key 'adapter.r': expected an integer, got 'x'"
    """

    def __init__(self, file: str | Path | None, key: str | None, expected: str) -> None:
        self.file = str(file) if file is not None else None
        self.key = key
        self.expected = expected
        parts = []
        if self.file:
            parts.append(self.file)
        if key:
            parts.append(f"key {key!r}")
        parts.append(expected)
        super().__init__(": ".join(parts))


class SizeError(SpecError):
    """Split sizes the data cannot meet: the fault is where the sizes were set (a profile or the
    command line), which the data loader does not know; :class:`SpecError` otherwise."""


class GateError(PeftcoreError, ValueError):
    """A gate option or baseline cannot be used (bad tolerance text, wrong baseline file)."""


class AssetError(PeftcoreError):
    """A model or data asset is missing or damaged; the message says how to fix it."""


class DivergenceError(PeftcoreError):
    """Training produced a NaN or infinite loss."""

    def __init__(self, step: int, loss: float) -> None:
        self.step = step
        self.loss = loss
        super().__init__(f"training diverged at step {step}: loss is {loss}")


class UnchangedWeightsError(PeftcoreError):
    """Training ran its steps and changed no trainable weight (a learning rate of 0 at every step,
    gradients that never reach the weights, a frozen adapter): the case learned nothing."""

    def __init__(self, steps: int, tensors: int) -> None:
        self.steps = steps
        super().__init__(
            f"training changed none of the {tensors} trainable tensors in {steps} step(s): the case "
            "learned nothing (a learning rate of 0 at every step, e.g. a warm-up as long as the run, "
            "or gradients that never reach the trainable weights)"
        )


def suggest(name: str, options: Iterable[str]) -> str:
    """A 'did you mean' hint, or the list of what exists when nothing is close."""
    options = sorted(options)
    close = difflib.get_close_matches(name, options, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    if len(options) <= 25:
        return "expected one of: " + ", ".join(options)
    return f"expected one of {len(options)} names, e.g. " + ", ".join(options[:10])
