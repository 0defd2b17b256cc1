"""Devices: which one a session uses, what it computes fast, and what ``precision: auto`` means there.

One answer for training, scoring and the planner: ``auto`` is bf16 where the device computes it
natively (a CUDA device that reports bf16 support; a CPU with AVX-512 BF16 or AMX), else fp32.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any


@functools.cache
def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512 BF16 or AMX), where autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags for flag in (" avx512_bf16", " amx_bf16"))


# The x86 instruction sets that decide which matmul kernels oneDNN and torch run, best first.
_CPU_ISAS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


@functools.cache
def cpu_kind() -> tuple[str, str]:
    """``(model name, best matmul instruction set)`` of this CPU, e.g. ``("AMD EPYC", "avx2")``:
    what a measured figure depends on beyond the architecture name (``x86_64``)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        import platform

        return platform.processor() or platform.machine(), "unknown"
    model, flags = "", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    isa = next((name for flag, name in _CPU_ISAS if flag in flags), "other")
    return model or "unknown", isa


def bf16_supported(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:N``) computes bf16 natively."""
    import torch

    if device.startswith("cuda"):
        index = torch.device(device).index
        if index is None or index == torch.cuda.current_device():
            return bool(torch.cuda.is_bf16_supported())
        return torch.cuda.get_device_capability(index) >= (8, 0)  # another GPU: Ampere or newer
    return cpu_has_fast_bf16()


def device_info(device: str) -> dict[str, Any]:
    import platform

    import torch

    info: dict[str, Any] = {"device": device, "torch_threads": torch.get_num_threads()}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            name=props.name, total_memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}"
        )
    else:
        model, isa = cpu_kind()
        info.update(name=platform.processor() or platform.machine(), cpu_count=os.cpu_count())
        info.update(cpu_model=model, cpu_isa=isa, fast_bf16=cpu_has_fast_bf16())
    return info


def scoring_precision(setting: str) -> str:
    """The precision scoring runs in: ``auto`` is fp32 (no autocast) on every device.

    Scoring ranks choices by summed log-likelihoods; under bf16 autocast the logits carry about
    three significant digits, so differences between choices come out in steps of 1/16 or
    coarser and many become exact ties (measured on SST-2: docs/metrics.md, "held-out / seen"). Scoring is
    a small share of a case's time, so the default pays for exact numbers on GPUs too; a user
    scoring a large model on a GPU may set ``eval.precision: bf16`` and accept coarser ranks.
    (A model held in bf16 or a 4-bit base computing in bf16 stays in that dtype either way:
    the setting only turns autocast on or off.)
    """
    return "fp32" if setting == "auto" else setting


def resolve_precision(setting: str, device: str, *, bf16_capable: bool | None = None) -> str:
    """The precision a setting means on ``device``: ``auto`` becomes bf16 where the device has
    fast bf16, else fp32; anything else is returned as given.

    ``bf16_capable`` answers for a device that is not present (the planner plans for GPUs it
    does not have); by default the device itself is asked.

    >>> resolve_precision("fp32", "cuda"), resolve_precision("auto", "cuda", bf16_capable=False)
    ('fp32', 'fp32')
    """
    if setting != "auto":
        return setting
    capable = bf16_supported(device) if bf16_capable is None else bf16_capable
    return "bf16" if capable else "fp32"
