"""One estimate: what a method costs on a model, from its config alone.

Counted on the meta model, not approximated: trainable and total parameters
(``parameter_counts``, as a case records them) and the files ``save_pretrained`` writes
(``peftcore.plan.files``). Predicted by the memory model: the peak training memory by part
(``peftcore.plan.memory``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.plan.files import saved_files
from peftcore.plan.memory import MemoryPart, memory_parts
from peftcore.plan.models import DEFAULT_SPECS, ModelInfo, apply_meta, resolve_model, stand_in_spec
from peftcore.plan.overhead import framework_overhead_bytes
from peftcore.plan.precision import activation_precision
from peftcore.spec import MethodSpec, TrainingBudget


@dataclass(frozen=True)
class Estimate:
    """What a method costs on a model; ``peak_case_bytes`` is comparable to ``PeakMemory``."""

    model: str
    method: str
    tuner: str
    device: str
    precision: str  # the activation precision actually assumed: bf16, fp16 or fp32
    batch_size: int
    seq_len: int
    gradient_checkpointing: bool
    optimizer: str
    padded: bool  # batches carry an attention mask (padding)
    trainable_params: int
    total_params: int
    adapter_bytes: int
    adapter_files: tuple[tuple[str, int], ...]  # (file name, bytes) as save_pretrained writes them
    parts: tuple[MemoryPart, ...]
    peak_case_bytes: int  # the case's peak above the level before it (PeakMemory's definition)
    framework_overhead_bytes: int  # the process before any case: interpreter, libraries, kernels
    notes: tuple[str, ...] = ()
    # Set when precision "auto" was resolved without asking the device (a CUDA device not here).
    precision_assumption: str = ""

    @property
    def peak_process_bytes(self) -> int:
        """What the machine must hold: the case's peak plus the framework's fixed cost."""
        return self.peak_case_bytes + self.framework_overhead_bytes

    def part(self, name: str) -> int:
        """Bytes of the memory part ``name`` (0 when the estimate has no such part)."""
        return sum(p.bytes for p in self.parts if p.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "tuner": self.tuner,
            "device": self.device,
            "precision": self.precision,
            "precision_assumption": self.precision_assumption or None,
            "batch_size": self.batch_size,
            "seq_len": self.seq_len,
            "gradient_checkpointing": self.gradient_checkpointing,
            "optimizer": self.optimizer,
            "padded": self.padded,
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "adapter_bytes": self.adapter_bytes,
            "adapter_files": dict(self.adapter_files),
            "peak_case_bytes": self.peak_case_bytes,
            "framework_overhead_bytes": self.framework_overhead_bytes,
            "peak_process_bytes": self.peak_process_bytes,
            "parts": {p.name: {"bytes": p.bytes, "formula": p.formula} for p in self.parts},
            "notes": list(self.notes),
        }


def estimate(
    config: Any,
    method: MethodSpec,
    budget: TrainingBudget | None = None,
    *,
    model_name: str = "model",
    dtype: str = "fp32",
    device: str = "cpu",
    adapter_overrides: Mapping[str, Mapping[str, Any]] | None = None,
    padded: bool = True,
) -> Estimate:
    """Trainable parameters, adapter size and predicted peak training memory of ``method`` on the
    model of ``config`` (a transformers config), for the batch, sequence length, precision,
    gradient checkpointing and optimizer of ``budget`` (default: ``TrainingBudget()``).

    ``dtype`` is how the full-precision base is held (a quantized base follows ``method.base``);
    ``adapter_overrides`` are the model's (``ModelSpec.adapter_overrides``); ``padded`` says
    batches carry an attention mask (the engine pads each batch to its longest sequence), which
    makes transformers repeat K/V per head; ``device`` is cpu or cuda.

    Raises PlannerError when the config is not a causal LM or the method cannot be applied to it
    (e.g. its target modules match nothing).
    """
    spec = stand_in_spec(model_name, adapter_overrides=adapter_overrides)
    info = ModelInfo(model_name, config, dtype, "config", spec)
    return estimate_model(info, method, budget or TrainingBudget(), device, padded)


def estimate_for(
    model: str,
    method: MethodSpec,
    budget: TrainingBudget | None = None,
    *,
    specs: str | Path | None = DEFAULT_SPECS,
    dtype: str | None = None,
    device: str = "cpu",
    padded: bool = True,
) -> Estimate:
    """``estimate`` for a model named as on the command line (spec, shipped name, path, hub id);
    a spec's adapter overrides apply as in the benchmark. PlannerError as ``resolve_model`` and
    ``estimate`` raise it."""
    info = resolve_model(model, specs, dtype)
    return estimate_model(info, method, budget or TrainingBudget(), device, padded)


def estimate_model(
    info: ModelInfo, method: MethodSpec, budget: TrainingBudget, device: str, padded: bool = True
) -> Estimate:
    """``estimate`` for a resolved model (``resolve_model``); PlannerError as ``estimate``."""
    from peftcore.train.methods import parameter_counts

    model = apply_meta(info, method, budget)
    trainable, total = parameter_counts(model)
    files = saved_files(model, method)
    planned = activation_precision(budget.precision, device)
    parts, peak, notes = memory_parts(info, method, budget, model, planned.precision, device, padded)
    return Estimate(
        model=info.name,
        method=method.name,
        tuner=method.tuner,
        device=device,
        precision=planned.precision,
        batch_size=budget.batch_size,
        seq_len=budget.max_length,
        gradient_checkpointing=budget.gradient_checkpointing,
        optimizer=budget.optimizer,
        padded=padded,
        trainable_params=trainable,
        total_params=total,
        adapter_bytes=sum(size for _, size in files),
        adapter_files=tuple(files),
        parts=tuple(parts),
        peak_case_bytes=peak,
        framework_overhead_bytes=framework_overhead_bytes(device),
        notes=tuple(notes),
        precision_assumption=planned.assumption,
    )
