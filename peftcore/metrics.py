"""Quality metrics as pure functions, each declaring once whether higher or lower is better.

(Skeleton: the registry and directions; the functions are filled in next to their entries.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable[..., float] | None
    higher_is_better: bool
    description: str


METRICS: dict[str, Metric] = {}


def register(name: str, *, higher_is_better: bool, description: str) -> Callable[[Any], Any]:
    def decorate(fn: Any) -> Any:
        if name in METRICS:
            raise ValueError(f"metric {name!r} registered twice")
        METRICS[name] = Metric(name, fn, higher_is_better, description)
        return fn

    return decorate


# Cost figures of a case record, with their direction (for gates and report arrows).
FIGURES: dict[str, bool] = {
    "peak_memory_bytes": False,
    "train_seconds": False,
    "tokens_per_second": True,
    "adapter_bytes": False,
    "trainable_params": False,
    "trainable_percent": False,
    "final_loss": False,
    "latency_ms_per_example": False,
    "examples_per_second": True,
    "load_seconds": False,
    "footprint_bytes": False,
}


def higher_is_better(name: str) -> bool | None:
    """Direction of a metric or cost figure; None when the name is unknown."""
    if name in METRICS:
        return METRICS[name].higher_is_better
    return FIGURES.get(name)
