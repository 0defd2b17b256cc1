"""The activation precision an estimate assumes, as the engine resolves ``precision: auto``.

The engine asks the device it trains on (``peftcore.device.resolve_precision``). The planner
asks too when that device is here; for a CUDA device that is not (planning for a GPU to rent), it
assumes a bf16-capable one (Ampere and later; a T4 or V100 is not: pass ``--precision fp16`` or
``fp32`` for those) and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from peftcore.device import resolve_precision

ASSUMED_BF16 = "assumed bf16-capable: no CUDA device here"


@dataclass(frozen=True)
class PlannedPrecision:
    """The precision (bf16, fp16, fp32) and, when the device could not be asked, the assumption."""

    precision: str
    assumption: str = ""  # empty when the device answered or the setting was explicit


def activation_precision(setting: str, device: str) -> PlannedPrecision:
    """What ``setting`` (auto, bf16, fp16, fp32) means on ``device`` (cpu, cuda, cuda:N)."""
    if setting != "auto":
        return PlannedPrecision(setting)
    if device.startswith("cuda") and not _cuda_present(device):
        return PlannedPrecision(resolve_precision(setting, device, bf16_capable=True), ASSUMED_BF16)
    return PlannedPrecision(resolve_precision(setting, device))


def _cuda_present(device: str) -> bool:
    import torch

    if not torch.cuda.is_available():
        return False
    index = torch.device(device).index
    return index is None or index < torch.cuda.device_count()
