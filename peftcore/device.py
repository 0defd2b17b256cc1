"""Devices: which one a session uses, what it computes fast, and what ``precision: auto`` means there.

One answer for training, scoring and the planner. ``auto`` trains in the precision the device
runs a decoder's matmuls fastest in, measured (:func:`precision_choice`): a CPU's instruction
flags do not say it (a Xeon with AVX-512 BF16 but no AMX runs bf16 matmuls at about half its fp32
speed; with AMX bf16 is several times faster). The measurement is cached on disk per CPU model
and flags (or GPU), torch version and thread count. The planner, planning for a device that is
not here, passes what that device is assumed to do instead (``bf16_capable``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.storage import atomic_write_json, cache_root

# Measured figures to use instead of measuring, e.g. ``fp32=3.2e11,bf16=1.8e11`` (FLOP/s per
# precision): tests, or a user who measured elsewhere. Nothing is cached when it is set.
PRECISION_FLOPS_ENV = "PEFTCORE_PRECISION_FLOPS"
# A reduced precision is chosen only when it beats fp32 by this factor: on a near tie fp32's
# exact sums are worth more than a few percent that the next measurement may not repeat.
REDUCED_PRECISION_MARGIN = 1.1
# What the cache file holds; a new version re-measures.
_PROBE_VERSION = 1
# (rows, inputs, outputs) of a decoder's training matmuls: the attention projection, the MLP's
# up (gate) and down projections. On a CPU SmolLM2-135M's at 1024 tokens a batch; on a GPU a
# 1B model's at 8192 (smaller ones measure kernel launches, not the matmul units).
_CPU_SHAPES = ((1024, 576, 576), (1024, 576, 1536), (1024, 1536, 576))
_CUDA_SHAPES = ((8192, 2048, 2048), (8192, 2048, 8192), (8192, 8192, 2048))
_WARMUP, _REPEATS = 1, 5


@functools.cache
def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 instructions (AVX-512 BF16 or AMX). Without them bf16 is
    emulated and slow; with them it may still be slower than fp32 (measured: :func:`precision_choice`)."""
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@functools.cache
def _cpuinfo() -> dict[str, str] | None:
    """The first processor's fields in /proc/cpuinfo (``model name``, ``flags``, ...); None
    where there is no such file."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_flags() -> frozenset[str]:
    return frozenset(((_cpuinfo() or {}).get("flags") or "").split())


# The x86 instruction sets that decide which matmul kernels oneDNN and torch run, best first.
_CPU_ISAS = (("amx_bf16", "amx"), ("avx512_bf16", "avx512_bf16"), ("avx512f", "avx512"), ("avx2", "avx2"))


@functools.cache
def cpu_kind() -> tuple[str, str]:
    """``(model name, best matmul instruction set)`` of this CPU, e.g. ``("AMD EPYC", "avx2")``:
    what a measured figure depends on beyond the architecture name (``x86_64``)."""
    info = _cpuinfo()
    if info is None:
        import platform

        return platform.processor() or platform.machine(), "unknown"
    flags = _cpu_flags()
    isa = next((name for flag, name in _CPU_ISAS if flag in flags), "other")
    return info.get("model name") or "unknown", isa


def bf16_supported(device: str) -> bool:
    """Whether ``device`` (``cpu``, ``cuda``, ``cuda:N``) has bf16 instructions."""
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


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision training runs in on a device, why, and the figures that decided it.

    ``flops_per_second``: each candidate's measured matmul throughput at a decoder's shapes
    (empty when the setting was explicit or the device not here); ``measured_in`` where the
    figures came from: ``measured``, ``cache <path>``, or the environment variable.
    """

    precision: str
    reason: str
    flops_per_second: Mapping[str, float] = field(default_factory=dict)
    measured_in: str = ""

    def record_fields(self) -> dict[str, Any]:
        """The record's training fields: ``precision_reason`` and, when measured,
        ``precision_flops_per_second`` (rounded)."""
        fields: dict[str, Any] = {"precision_reason": self.reason}
        if self.flops_per_second:
            fields["precision_flops_per_second"] = {p: round(f) for p, f in self.flops_per_second.items()}
        return fields


def training_candidates(device: str) -> tuple[tuple[str, ...], str]:
    """The precisions ``auto`` may train in on ``device``, and why one was left out (or "").

    A CPU: fp32, and bf16 autocast where it has bf16 instructions (without them bf16 is
    emulated, many times slower: not worth measuring). A GPU: fp32 and bf16, or fp16 (with the
    Trainer's loss scaling) on one without bf16.
    """
    if device.startswith("cuda"):
        return ("fp32", "bf16" if bf16_supported(device) else "fp16"), ""
    if cpu_has_fast_bf16():
        return ("fp32", "bf16"), ""
    return ("fp32",), "bf16 not measured: without AVX-512 BF16 or AMX this CPU emulates it (slow)"


def resolve_precision(setting: str, device: str, *, bf16_capable: bool | None = None) -> str:
    """The precision a setting means on ``device``: ``auto`` is :func:`precision_choice`'s
    measured answer; anything else is returned as given.

    ``bf16_capable`` answers for a device that is not present (the planner plans for GPUs it
    does not have): ``auto`` is then bf16 if it is capable, else fp32, unmeasured.

    >>> resolve_precision("fp32", "cuda"), resolve_precision("auto", "cuda", bf16_capable=False)
    ('fp32', 'fp32')
    """
    return precision_choice(setting, device, bf16_capable=bf16_capable).precision


def precision_choice(
    setting: str,
    device: str,
    *,
    bf16_capable: bool | None = None,
    measured: Mapping[str, float] | None = None,
) -> PrecisionChoice:
    """What training's ``setting`` (auto, bf16, fp16, fp32) means on ``device``, with the reason.

    An explicit setting is obeyed. ``auto`` measures the candidates (:func:`training_candidates`)
    once per device kind, torch version and thread count (cached under ``$PEFTCORE_CACHE/device``;
    a missing or unreadable cache file is measured again) and takes the fastest, a reduced
    precision only when it beats fp32 by ``REDUCED_PRECISION_MARGIN``. ``measured`` (or the
    environment variable ``PEFTCORE_PRECISION_FLOPS``, e.g. ``fp32=3.2e11,bf16=1.8e11``) gives
    the figures instead of measuring; candidates it lacks are left out.

    >>> precision_choice("auto", "cpu", measured={"fp32": 3.2e11, "bf16": 1.8e11}).precision
    'fp32'
    """
    if setting != "auto":
        return PrecisionChoice(setting, f"precision: {setting} set in the spec")
    if bf16_capable is not None:
        chosen = "bf16" if bf16_capable else "fp32"
        return PrecisionChoice(chosen, f"auto: {chosen} assumed for a device that is not here (not measured)")
    candidates, left_out = training_candidates(device)
    if measured is None and os.environ.get(PRECISION_FLOPS_ENV):
        measured, source = _parse_figures(os.environ[PRECISION_FLOPS_ENV]), PRECISION_FLOPS_ENV
    elif measured is not None:
        source = "given"
    else:
        measured, source = _measured_figures(device, candidates)
    if "fp32" not in measured:
        raise ValueError(f"measured precision figures {dict(measured)} lack fp32's, the one to compare with")
    figures = {p: float(measured[p]) for p in candidates if p in measured}
    return _choose(figures, left_out, source)


def _choose(figures: Mapping[str, float], left_out: str, source: str) -> PrecisionChoice:
    fp32 = figures["fp32"]
    reduced = {p: f for p, f in figures.items() if p != "fp32"}
    best = max(reduced, key=lambda p: reduced[p], default=None)
    shown = ", ".join(f"{p} {f / 1e9:.0f}" for p, f in sorted(figures.items(), key=lambda kv: -kv[1]))
    measured = f"measured GFLOP/s at a decoder's matmul shapes: {shown}"
    if best is not None and reduced[best] >= REDUCED_PRECISION_MARGIN * fp32:
        reason = f"auto: {best}, {reduced[best] / fp32:.2f}x fp32 ({measured})"
        return PrecisionChoice(best, reason, dict(figures), source)
    if best is not None:
        ratio = reduced[best] / fp32
        why = f"{best} is {ratio:.2f}x fp32, under the {REDUCED_PRECISION_MARGIN}x it must reach"
    else:
        why = left_out or "no reduced precision to measure"
    return PrecisionChoice("fp32", f"auto: fp32, {why} ({measured})", dict(figures), source)


def _parse_figures(text: str) -> dict[str, float]:
    """``fp32=3.2e11,bf16=1.8e11`` -> ``{"fp32": 3.2e11, "bf16": 1.8e11}``."""
    figures: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.partition("=")
        try:
            figures[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep:
            raise ValueError(f"{PRECISION_FLOPS_ENV}={text!r}: expected e.g. fp32=3.2e11,bf16=1.8e11")
    return figures


def precision_cache_key(device: str) -> dict[str, Any]:
    """What a measured choice depends on: the CPU's model and bf16/matmul flags (or the GPU's
    name and capability), torch's version and its thread count."""
    import torch

    key: dict[str, Any] = {"version": _PROBE_VERSION, "device": device.split(":")[0]}
    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        key.update(gpu=props.name, capability=f"{props.major}.{props.minor}")
    else:
        model, isa = cpu_kind()
        flags = sorted(_cpu_flags() & {"amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2", "fma"})
        key.update(cpu_model=model, cpu_isa=isa, cpu_flags=flags)
    key.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    return key


def precision_cache_file(key: Mapping[str, Any]) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    return cache_root() / "device" / f"precision-{digest}.json"


_MEASURED: dict[str, dict[str, float]] = {}  # per process, by cache file


def _measured_figures(device: str, candidates: tuple[str, ...]) -> tuple[dict[str, float], str]:
    """The candidates' figures from this process, the cache file, or a measurement (written)."""
    key = precision_cache_key(device)
    path = precision_cache_file(key)
    if str(path) in _MEASURED:
        return _MEASURED[str(path)], f"cache {path}"
    cached = _read_cache(path, key, candidates)
    if cached is not None:
        _MEASURED[str(path)] = cached
        return cached, f"cache {path}"
    figures = {p: measure_matmul_flops(device, p) for p in candidates}
    atomic_write_json(path, {"key": key, "flops_per_second": figures, "measured_at": time.time()})
    _MEASURED[str(path)] = figures
    return figures, "measured"


def _read_cache(path: Path, key: Mapping[str, Any], candidates: tuple[str, ...]) -> dict[str, float] | None:
    """The cached figures, or None for a file that is missing, unreadable, of another key or
    lacking a candidate (measured again)."""
    try:
        data = json.loads(path.read_text())
        figures = {p: float(data["flops_per_second"][p]) for p in candidates}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if data.get("key") != key or not all(f > 0 for f in figures.values()):
        return None
    return figures


def measure_matmul_flops(device: str, precision: str) -> float:
    """FLOP/s of a decoder's training matmuls in ``precision`` (autocast over fp32 inputs, as
    training runs): each shape timed best of a few after a warm-up, the total FLOPs over the
    summed best times. About a second on a 2-core CPU."""
    import torch

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    shapes = _CUDA_SHAPES if device.startswith("cuda") else _CPU_SHAPES
    kind = "cuda" if device.startswith("cuda") else "cpu"

    def sync() -> None:
        if kind == "cuda":
            torch.cuda.synchronize(device)

    total_flops, total_seconds = 0, 0.0
    with torch.no_grad():
        for rows, inputs, outputs in shapes:
            a = torch.randn(rows, inputs, device=device)
            b = torch.randn(inputs, outputs, device=device)
            best = float("inf")
            with torch.autocast(kind, dtype=dtype or torch.float32, enabled=dtype is not None):
                for attempt in range(_WARMUP + _REPEATS):
                    sync()
                    start = time.perf_counter()
                    torch.matmul(a, b)
                    sync()
                    if attempt >= _WARMUP:
                        best = min(best, time.perf_counter() - start)
            total_flops += 2 * rows * inputs * outputs
            total_seconds += best
    return total_flops / total_seconds
