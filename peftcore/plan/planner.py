"""``peftcore estimate``: trainable parameters, adapter size and peak training memory from a config alone.

The model is built on the meta device from its ``config.json`` (no weights, no memory) and the
method is applied to it exactly as the training engine applies it (``peftcore.train.methods.apply_method``
with the peft config of ``build_peft_config``). What can be counted is counted on the resulting
modules, not approximated by a formula:

- trainable and total parameters: ``peftcore.train.methods.parameter_counts`` on the meta model;
- the adapter's size on disk: the tensors ``save_pretrained`` would write (peft's
  ``get_peft_model_state_dict``; for ``full`` the model's state dict without tied copies, split into
  shards as transformers splits it), in the dtype they would be written in, plus each safetensors
  file's 8-byte length and JSON header laid out as the safetensors library lays it out.

A quantized base (``nf4``, ``fp4``, ``int8``) is not quantized here: bitsandbytes layers keep the
shapes of the ``nn.Linear`` they replace and peft sizes its adapters from those shapes
(``in_features``/``out_features``), so LoRA's A/B matrices and DoRA's magnitude vectors are the same
on a quantized and an unquantized base. The tests check this against real bitsandbytes models.

Peak training memory is predicted from its parts, each shown with its formula (see ``MEMORY_MODEL``).
The figure means what ``peftcore.measure.PeakMemory`` measures for a case: the peak above the
level before the case, where the case holds its own copy of the base model
(``LoadedBase.fresh()``), the adapter, gradients, optimizer states and the activations of a
training step. The framework's fixed cost (the Python process with torch, transformers and peft
imported) is outside that window; it is shown separately and added for the budget check.

Nothing heavy is imported at module level: ``import peftcore.plan.planner`` stays cheap.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError, SpecError
from peftcore.spec import BaseOptions, MethodSpec, SpecStore, TrainingBudget

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
DEFAULT_SPECS = Path("benchmarks/specs")
DEFAULT_RESULTS = Path("reports/runs")


class PlannerError(PeftcoreError):
    """The estimate cannot be made; the message says what to pass instead."""


# --------------------------------------------------------------------------- byte units

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


def parse_bytes(text: str) -> int:
    """A memory size in bytes: ``24GB`` (10^9), ``24GiB`` (2^30), ``24000MB``, ``12G`` (= 12GB).

    A bare letter (K, M, G, T) is the decimal unit, like KB, MB, GB, TB; the binary units are
    spelled KiB, MiB, GiB, TiB. A number alone is bytes.

    >>> parse_bytes("24GB"), parse_bytes("1GiB"), parse_bytes("12G"), parse_bytes("1.5 MB")
    (24000000000, 1073741824, 12000000000, 1500000)
    """
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise PlannerError(
            f"cannot read memory size {text!r}: write a number and a unit such as 24GB, 24GiB, "
            "24000MB or 12G (G, M, K mean GB, MB, KB: powers of 1000; GiB, MiB, KiB: powers of 1024)"
        )
    return round(float(match.group(1)) * _UNITS[unit])


def format_bytes(n: float) -> str:
    """Decimal units, like ``parse_bytes`` reads them: ``format_bytes(1.5e9) == '1.50 GB'``."""
    for unit, size in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


# --------------------------------------------------------------------------- results of an estimate


@dataclass(frozen=True)
class MemoryPart:
    """One term of the memory model: its size, and how it was computed (one line)."""

    name: str
    bytes: int
    formula: str


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

    @property
    def peak_process_bytes(self) -> int:
        """What the machine must hold: the case's peak plus the framework's fixed cost."""
        return self.peak_case_bytes + self.framework_overhead_bytes

    def part(self, name: str) -> int:
        return sum(p.bytes for p in self.parts if p.name == name)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "method": self.method,
            "tuner": self.tuner,
            "device": self.device,
            "precision": self.precision,
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


# --------------------------------------------------------------------------- the framework's fixed cost

# Resident set of a Python process after ``import torch, transformers, peft`` and one forward +
# backward of a 2-layer, 64-wide Llama under bf16 autocast: what the process holds before any case.
# Measured with ``measure_framework_overhead()`` (VmRSS of a fresh interpreter) on this project's
# 2-core x86-64 CPU machine, torch 2.13.0+cpu, transformers 5.23.0, peft 0.21.2: 5 runs,
# 477.2-478.5 MB; the median is shipped. On CUDA the context and kernels come on top (typically
# 0.3-1 GB by GPU and CUDA version); not measured here, so no CUDA figure is claimed.
FRAMEWORK_OVERHEAD_BYTES = {"cpu": 477_364_224}

_OVERHEAD_PROBE = """
import torch, transformers, peft
from transformers import LlamaConfig, LlamaForCausalLM
cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=256)
model = LlamaForCausalLM(cfg)
ids = torch.randint(0, 256, (2, 16))
with torch.autocast("cpu", dtype=torch.bfloat16):
    loss = model(input_ids=ids, labels=ids).loss
loss.backward()
for line in open("/proc/self/status"):
    if line.startswith("VmRSS:"):
        print(int(line.split()[1]) * 1024)
"""


def measure_framework_overhead() -> int:
    """Measure the CPU constant again: the RSS of a fresh interpreter after imports and a tiny step."""
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", _OVERHEAD_PROBE], capture_output=True, text=True, check=True, timeout=600
    )
    return int(out.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelInfo:
    """A model config resolved from a spec name, a shipped name, a path or a hub id."""

    name: str
    config: Any  # transformers.PretrainedConfig
    dtype: str  # fp32 | bf16 | fp16: how the full-precision base is held in memory
    source: str
    adapter_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


def shipped_models() -> dict[str, Path]:
    """Model configs that ship with peftcore: name -> config.json."""
    return {p.stem: p for p in sorted(CONFIG_DIR.glob("*.json"))}


def _load_config_file(path: Path) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError, KeyError) as err:
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlannerError(f"{path}: not a usable transformers config ({message})") from None


def resolve_model(ref: str, specs: str | Path | None = DEFAULT_SPECS, dtype: str | None = None) -> ModelInfo:
    """Find a model's config: a model spec name, a path (config.json or its folder), a shipped name,
    or a hub id (needs a network or a filled hub cache).

    A spec name brings the spec's dtype and adapter overrides; anything else is held in ``dtype``
    (default: the ``model.dtype`` of the spec directory's defaults, fp32).
    """
    store = _store(specs)
    default_dtype = str((store.defaults.get("model", {}) if store else {}).get("dtype", "fp32"))
    path = Path(ref).expanduser()
    if store is not None and ref in store.names("models"):
        from peftcore.models.checkpoints import checkpoint_dir

        spec = store.get("models", ref)
        where = checkpoint_dir(spec)
        if Path(where).is_dir():
            config = _load_config_file(Path(where) / "config.json")
        else:
            config = _hub_config(where, spec.source.revision)
        return ModelInfo(ref, config, dtype or spec.dtype, f"spec {spec.file}", spec.adapter_overrides)
    if path.is_file() or (path.is_dir() and (path / "config.json").is_file()):
        file = path if path.is_file() else path / "config.json"
        return ModelInfo(_display_name(file), _load_config_file(file), dtype or default_dtype, str(file))
    shipped = shipped_models()
    if ref.lower() in shipped:
        file = shipped[ref.lower()]
        return ModelInfo(ref.lower(), _load_config_file(file), dtype or default_dtype, f"shipped {file.name}")
    if "/" in ref and not path.exists():
        return ModelInfo(ref, _hub_config(ref, None), dtype or default_dtype, f"hub {ref}")
    known = sorted({*shipped, *(store.names("models") if store else ())})
    raise PlannerError(
        f"unknown model {ref!r}: not a model spec, a shipped config, a config.json path or a hub id; "
        f"known names: {', '.join(known)}"
    )


def _display_name(file: Path) -> str:
    return file.parent.name if file.name == "config.json" else file.stem


def _hub_config(repo_id: str, revision: str | None) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(repo_id, revision=revision)
    except (OSError, ValueError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise PlannerError(
            f"cannot fetch the config of {repo_id!r} from the hub ({reason[:120]}); offline, pass a local "
            f"file instead: --model path/to/config.json (the config.json of {repo_id}), or a shipped "
            f"name: {', '.join(shipped_models())}"
        ) from None


def _store(specs: str | Path | None) -> SpecStore | None:
    if specs is None:
        return None
    try:
        return SpecStore(specs)
    except SpecError:
        return None


def build_meta_model(config: Any, dtype: str) -> Any:
    """The causal LM of ``config`` on the meta device (shapes and dtypes only, no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    from peftcore.models.load import torch_dtype

    try:
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))
    except ValueError as err:
        if "Unrecognized configuration class" in str(err):
            kind = getattr(config, "model_type", "?")
            raise PlannerError(
                f"not a causal language model: config model_type {kind!r} has no AutoModelForCausalLM class"
            ) from None
        raise


def _with_overrides(method: MethodSpec, overrides: Mapping[str, Mapping[str, Any]]) -> MethodSpec:
    """The model's adapter overrides, applied as ``peftcore.spec.cases`` applies them."""
    from peftcore.spec import deep_merge
    from peftcore.spec.schema import freeze

    extra = overrides.get(method.tuner) if method.is_peft else None
    if not extra:
        return method
    return dataclasses.replace(method, adapter=freeze(deep_merge(method.adapter, extra)))


def apply_meta(model_info: ModelInfo, method: MethodSpec, budget: TrainingBudget) -> Any:
    """The meta model made trainable as ``method`` says, by the engine's own ``apply_method``.

    A quantized base is built in its compute dtype (how ``load_base`` holds its unquantized
    modules); peft's adapters are sized from the layers' shapes, which bitsandbytes keeps.
    """
    import torch

    from peftcore.train.methods import apply_method

    method = _with_overrides(method, model_info.adapter_overrides)
    dtype = model_info.dtype if method.base.quantization == "none" else method.base.compute_dtype
    model = build_meta_model(model_info.config, dtype)
    with torch.device("meta"):
        try:
            return apply_method(model, method, budget)
        except SpecError as err:
            raise PlannerError(f"method {method.name}: {err.expected}") from None


# --------------------------------------------------------------------------- what save_pretrained writes

# safetensors orders tensors by dtype (this rank, descending), then by name.
_ST_DTYPES = {
    "bool": ("BOOL", 0),
    "uint8": ("U8", 1),
    "int8": ("I8", 2),
    "int16": ("I16", 3),
    "float16": ("F16", 4),
    "bfloat16": ("BF16", 5),
    "int32": ("I32", 6),
    "float32": ("F32", 7),
    "float64": ("F64", 8),
    "int64": ("I64", 9),
}


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str  # torch dtype name without "torch.", e.g. float32
    shape: tuple[int, ...]
    itemsize: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def safetensors_file_bytes(tensors: Sequence[TensorInfo], metadata: Mapping[str, str] | None = None) -> int:
    """The size of the safetensors file holding ``tensors``: 8-byte header length, JSON header
    (padded with spaces to a multiple of 8), then the data; laid out as ``safetensors`` does."""
    order = sorted(tensors, key=lambda t: (-_ST_DTYPES[t.dtype][1], t.name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for t in order:
        header[t.name] = {
            "dtype": _ST_DTYPES[t.dtype][0],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    padded = len(text) + (-len(text)) % 8
    return 8 + padded + offset


def _tensor_info(name: str, tensor: Any) -> TensorInfo:
    return TensorInfo(
        name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), tensor.element_size()
    )


def adapter_tensors(model: Any) -> list[TensorInfo]:
    """The tensors ``save_pretrained`` writes for a peft model (a method other than full/none)."""
    from peft.utils import get_peft_model_state_dict

    if getattr(model, "peft_config", None) and model.peft_config["default"].is_prompt_learning:
        return [TensorInfo("prompt_embeddings", *_prompt_embedding(model))]
    # save_pretrained's "auto" also saves embeddings when their vocabulary was resized against the
    # base's hub config (a hub lookup); a config-only estimate never resizes: only "targeted" counts.
    from peft.utils.constants import EMBEDDING_LAYER_NAMES

    targets = getattr(model.peft_config["default"], "target_modules", None)
    targeted = isinstance(targets, (set, list, tuple)) and any(k in targets for k in EMBEDDING_LAYER_NAMES)
    state = get_peft_model_state_dict(model, save_embedding_layers=targeted)
    return [_tensor_info(name, tensor) for name, tensor in state.items()]


def _prompt_embedding(model: Any) -> tuple[str, tuple[int, ...], int]:
    """Dtype and shape of what peft saves for prompt learning (``get_prompt_embedding_to_save``,
    which cannot run on the meta device because it copies to the CPU)."""
    config = model.peft_config["default"]
    encoder = model.prompt_encoder["default"]
    tokens = model.prompt_tokens["default"].unsqueeze(0).expand(1, -1).to("meta")
    if config.peft_type.value == "PREFIX_TUNING":
        tokens = tokens[:, : config.num_virtual_tokens]
    out = encoder(tokens)[0]
    return str(out.dtype).removeprefix("torch."), tuple(out.shape), out.element_size()


def full_model_files(model: Any) -> list[tuple[str, list[TensorInfo]]]:
    """(file name, tensors) of ``model.save_pretrained``: the state dict without tied copies, split
    into shards as transformers splits it (its default ``max_shard_size``)."""
    import inspect

    from huggingface_hub import split_torch_state_dict_into_shards
    from transformers import modeling_utils

    state = model.state_dict()
    remove_tied = getattr(modeling_utils, "remove_tied_weights_from_state_dict", None)
    if remove_tied is not None:
        state = remove_tied(state, model)
    max_shard = inspect.signature(type(model).save_pretrained).parameters["max_shard_size"].default
    split = split_torch_state_dict_into_shards(
        state, filename_pattern="model{suffix}.safetensors", max_shard_size=max_shard
    )
    return [
        (file, [_tensor_info(name, state[name]) for name in names])
        for file, names in split.filename_to_tensors.items()
    ]


def saved_files(model: Any, method: MethodSpec) -> list[tuple[str, int]]:
    """(file name, bytes) of the weight files ``save_pretrained`` writes after training ``method``."""
    if method.tuner == "none":
        return []
    if method.tuner == "full":
        return [(f, safetensors_file_bytes(ts, {"format": "pt"})) for f, ts in full_model_files(model)]
    return [
        (
            "adapter_model.safetensors",
            safetensors_file_bytes(adapter_tensors(model), {"format": "pt"}),
        )
    ]


# --------------------------------------------------------------------------- the memory model

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

_LOW_RANK = {"lora", "adalora", "vblora"}
_INPUT_COPY = {"loha", "lokr", "oft"}
_WEIGHT_COPIES = {"loha": 1, "lokr": 1}  # the delta weight, cast to p, kept by F.linear
_RESTORES_DTYPE = {"vblora", "vera", "loha", "lokr", "oft"}  # output cast back to the input's dtype
_MLP_INPUT_SIDE = ("gate_proj", "up_proj", "w1", "w3", "fc1")


def _output_bytes(lin: _Linear, in_bytes: int, p: int) -> int:
    """Bytes per value of a linear's output: p under autocast, except where the layer casts back."""
    if lin.adapter in _RESTORES_DTYPE or lin.quant in ("nf4", "fp4"):
        return in_bytes  # peft's "result.to(previous_dtype)"; Linear4bit returns its input's dtype
    return p


def _bytes_of(dtype_name: str) -> int:
    return {"fp32": 4, "bf16": 2, "fp16": 2}[dtype_name]


def activation_precision(budget: TrainingBudget, device: str) -> str:
    """The precision the engine trains in: ``auto`` is bf16 autocast where the device has it."""
    if budget.precision != "auto":
        return budget.precision
    if device.startswith("cuda"):
        return "bf16"
    from peftcore.measure import cpu_has_fast_bf16

    return "bf16" if cpu_has_fast_bf16() else "fp32"


def _decoder_layers(model: Any, n_layers: int) -> Any:
    import torch

    for _, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == n_layers:
            return module
    raise PlannerError(f"cannot find the {n_layers} decoder layers in {type(model).__name__}")


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if getter else config


@dataclass
class _Linear:
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


def _linears_of(layer: Any, method: MethodSpec) -> list[_Linear]:
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
            found.append(_Linear(name, module.in_features, module.out_features, quant, trained))
    return found


def _inside_tuner(layer: Any, name: str) -> bool:
    """True for linears that belong to a peft layer (its base layer or adapter factors)."""
    parts = name.split(".")
    return any(hasattr(layer.get_submodule(".".join(parts[:i])), "base_layer") for i in range(1, len(parts)))


def _describe_tuner_layer(name: str, module: Any, base: Any, tuner: str, quant: str) -> _Linear:
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
    return _Linear(
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


_INPUT_SIDE = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "query_key_value", "c_attn", "w1", "w3")


def _share_group(name: str) -> str:
    """Linears that read the same tensor (attention inputs, MLP inputs) share one saved input."""
    leaf = name.rsplit(".", 1)[-1]
    parent = name.rsplit(".", 1)[0] if "." in name else ""
    return f"{parent}:in" if leaf in _INPUT_SIDE else name


@dataclass
class _Work:
    """Accumulates the activation model of one decoder layer."""

    per_token: int = 0  # bytes per token of one layer
    per_layer: int = 0  # bytes per layer, independent of tokens (weight-sized copies)
    lines: list[str] = field(default_factory=list)


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
    ``padded`` says batches carry an attention mask (the engine pads each batch to its longest
    sequence), which makes transformers repeat K/V per head; ``device`` is cpu or cuda.

    Raises PlannerError when the config is not a causal LM or the method cannot be applied to it
    (e.g. its target modules match nothing).
    """
    budget = budget or TrainingBudget()
    info = ModelInfo(model_name, config, dtype, "config", adapter_overrides or {})
    return _estimate(info, method, budget, device, padded)


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
    a spec's adapter overrides apply as in the benchmark."""
    info = resolve_model(model, specs, dtype)
    return _estimate(info, method, budget or TrainingBudget(), device, padded)


def _estimate(
    info: ModelInfo, method: MethodSpec, budget: TrainingBudget, device: str, padded: bool = True
) -> Estimate:
    from peftcore.train.methods import parameter_counts

    model = apply_meta(info, method, budget)
    trainable, total = parameter_counts(model)
    files = saved_files(model, method)
    precision = activation_precision(budget, device)
    parts, peak, notes = _memory(info, method, budget, model, precision, device, padded)
    return Estimate(
        model=info.name,
        method=method.name,
        tuner=method.tuner,
        device=device,
        precision=precision,
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
        framework_overhead_bytes=FRAMEWORK_OVERHEAD_BYTES.get(device.split(":")[0], 0),
        notes=tuple(notes),
    )


def _memory(
    info: ModelInfo,
    method: MethodSpec,
    budget: TrainingBudget,
    model: Any,
    precision: str,
    device: str,
    padded: bool,
) -> tuple[list[MemoryPart], int, list[str]]:
    """The memory parts of one training case and its peak (see ``MEMORY_MODEL``)."""
    import torch

    notes: list[str] = []
    quant = method.base.quantization
    base_model = model.get_base_model() if hasattr(model, "get_base_model") else model
    # -- base weights
    base_bytes, base_formula, float_itemsize = _base_weights(base_model, method.base, info.dtype)
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
    text = _text_config(info.config)
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
    layers = _decoder_layers(base_model, text.num_hidden_layers)
    layer = layers[min(1, len(layers) - 1)]
    work = _layer_activations(
        text, layer, method, p, residual, autocast, float_itemsize, device, seq, kv_extra, padded
    )
    n_layers = text.num_hidden_layers
    hidden = text.hidden_size
    vocab = text.vocab_size
    rope = 2 * 4 * _head_dim(text)  # cos and sin, fp32, shared by every layer
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
    transient = _dora_transient(layer) if any(lin.dora for lin in _linears_of(layer, method)) else 0
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


def _head_dim(text: Any) -> int:
    return int(getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads)


def _layer_activations(
    text: Any,
    layer: Any,
    method: MethodSpec,
    p: int,
    residual: int,
    autocast: bool,
    float_itemsize: int,
    device: str,
    seq: int,
    kv_extra: int,
    padded: bool,
) -> _Work:
    """Bytes saved for backward by one decoder layer: per token, and per layer (weight copies)."""
    work = _Work()
    heads = text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    head_dim = _head_dim(text)
    q_dim, kv_dim = heads * head_dim, kv_heads * head_dim
    # With an attention mask (padding, a prefix, a window shorter than the keys) transformers
    # repeats K/V to every head and SDPA keeps the mask, cast to p; without one it uses GQA.
    window = getattr(text, "sliding_window", None)
    masked = padded or kv_extra > 0 or bool(window and window < seq + kv_extra)
    kv_eff = q_dim if masked else kv_dim
    kv_scale = (seq + kv_extra) / seq
    mask_bytes = p * (seq + kv_extra) if masked else 0
    linears = _linears_of(layer, method)
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


def _dora_transient(layer: Any) -> int:
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
    return [t for name, t in named if t.requires_grad or _is_adapter_name(name)]


_ADAPTER_KEYS = ("lora_", "vera_", "vblora_", "hada_", "lokr_", "oft_", "ia3_", "prompt_encoder", "ranknum")


def _is_adapter_name(name: str) -> bool:
    return any(key in name for key in _ADAPTER_KEYS)


def _optimizer_states(trainable: Sequence[Any], optimizer: str) -> tuple[int, str]:
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


def base_weight_bytes(config: Any, base: BaseOptions, dtype: str = "fp32", *, prepared: bool = True) -> int:
    """Bytes of a base model: held in ``dtype`` (fp32, bf16, fp16) when not quantized, else as
    bitsandbytes stores ``base.quantization`` with the other modules in the compute dtype, as
    ``load_base`` holds it; ``prepared`` counts those other parameters in fp32, as a training case
    holds them after peft's ``prepare_model_for_kbit_training``."""
    model = build_meta_model(config, dtype if base.quantization == "none" else base.compute_dtype)
    return _base_weights(model, base, dtype, prepared=prepared)[0]


def _base_weights(
    base_model: Any, options: BaseOptions, dtype: str, *, prepared: bool = True
) -> tuple[int, str, int]:
    """Bytes of the base model's copy, the formula, and the itemsize of its float weights."""
    import torch

    quant = options.quantization
    compute = _bytes_of(options.compute_dtype)
    held = _bytes_of(dtype)
    owners = {name: module for name, module in base_model.named_modules()}
    lm_head = base_model.get_output_embeddings()
    total = quantized = floats = 0
    named = [*base_model.named_parameters(), *base_model.named_buffers()]  # tied tensors once
    for name, tensor in named:
        if _is_adapter_name(name):
            continue
        owner = owners.get(name.rsplit(".", 1)[0]) if "." in name else None
        n = tensor.numel()
        # transformers quantizes every nn.Linear but the output head (and its tied twin)
        linear = owner if type(owner) is torch.nn.Linear and owner is not lm_head else None
        if quant != "none" and linear is not None and name.endswith(".weight"):
            total += _quantized_bytes(n, linear.out_features, quant, options.double_quant)
            quantized += n
        elif tensor.is_floating_point():
            if quant == "none":
                size = held if isinstance(tensor, torch.nn.Parameter) else tensor.element_size()
            elif isinstance(tensor, torch.nn.Parameter):
                # prepare_model_for_kbit_training casts fp16/bf16 parameters to fp32
                size = 4 if prepared else compute
            else:
                size = tensor.element_size() if tensor.dtype == torch.float32 else compute
            total += n * size
            floats += n
        else:
            total += n * tensor.element_size()
    if quant == "none":
        formula = f"{floats:,} values at {dtype} (tied weights once)"
    elif quant in ("nf4", "fp4"):
        dq = "double-quantized absmax" if options.double_quant else "fp32 absmax"
        formula = f"{quantized:,} {quant} values (n/2 bytes + {dq} per 64) + {floats:,} others in fp32"
    else:
        formula = f"{quantized:,} int8 values + fp32 scale per row + {floats:,} others in fp32"
    return total, formula, held if quant == "none" else 4


def _quantized_bytes(n: int, rows: int, quant: str, double_quant: bool) -> int:
    """Bytes bitsandbytes holds for one quantized weight of ``n`` values and ``rows`` output rows."""
    if quant == "int8":
        return n + 4 * rows  # int8 values + fp32 row scale (SCB)
    blocks = math.ceil(n / 64)
    packed = math.ceil(n / 2)
    code = 16 * 4  # the 4-bit code table of each QuantState
    if not double_quant:
        return packed + 4 * blocks + code
    nested = math.ceil(blocks / 256)
    # absmax as uint8, nested absmax fp32, the nested 256-entry fp32 code, the fp32 offset
    return packed + blocks + 4 * nested + 256 * 4 + 4 + code


# --------------------------------------------------------------------------- the method ladder


@dataclass(frozen=True)
class Quality:
    """A method's measured quality: mean over tasks of a 0-1 score from its rank per task."""

    score: float
    tasks: int


def measured_quality(
    results: Path, model: str | None, store: SpecStore | None
) -> tuple[dict[str, Quality], str]:
    """Per method, the mean over tasks of its rank score on the task's primary metric.

    Records come from every run under ``results`` (the newest record wins per method, model and
    task); only finished ones count. On each task, methods are ranked by the task's first metric
    (its direction from the metric registry) and scored 1 (best) to 0 (worst), ties sharing the
    mean rank. Records of ``model`` are used when there are any, else those of every model.
    """
    from peftcore.results.store import load_run

    records: dict[tuple[str, str, str], dict[str, Any]] = {}
    runs = sorted(p for p in results.glob("*") if p.is_dir()) if results.is_dir() else []
    for run in runs:
        for record in load_run(run).records:
            if record.get("status") == "finished":
                records[(record["method"], record["model"], record["task"])] = record
    if not records:
        return {}, ""
    same_model = {k: v for k, v in records.items() if k[1] == model}
    chosen = same_model or records
    scope = f"model {model}" if same_model else "all models (none for this model)"
    by_task: dict[str, dict[str, float]] = {}
    for (method, _, task), record in chosen.items():
        metric = _primary_metric(record, store)
        value = (record.get("metrics") or {}).get("held_out", {}).get(metric) if metric else None
        if isinstance(value, (int, float)) and math.isfinite(value):
            higher = _higher_is_better(metric)
            by_task.setdefault(task, {})[method] = value if higher else -value
    scores: dict[str, list[float]] = {}
    for values in by_task.values():
        for method, score in _rank_scores(values).items():
            scores.setdefault(method, []).append(score)
    quality = {m: Quality(sum(s) / len(s), len(s)) for m, s in scores.items()}
    how = (
        f"quality: mean over {len(by_task)} task(s) of a rank score on each task's primary metric "
        f"(1 = best method on the task, 0 = worst), from stored runs in {results} ({scope})"
    )
    return quality, how


def _primary_metric(record: Mapping[str, Any], store: SpecStore | None) -> str | None:
    task = (record.get("spec") or {}).get("task") or {}
    metrics = task.get("metrics")
    if not metrics and store is not None:
        try:
            metrics = store.get("tasks", record["task"]).metrics
        except SpecError:
            metrics = None
    return str(metrics[0]) if metrics else None


def _higher_is_better(metric: str | None) -> bool:
    if metric is None:
        return True
    try:
        from peftcore.results.quantities import higher_is_better
    except ImportError:
        return True
    return higher_is_better(metric) is not False


def _rank_scores(values: Mapping[str, float]) -> dict[str, float]:
    """Higher value = better; scores from 1 (best) to 0 (worst), ties share the mean rank."""
    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    n = len(ordered)
    if n == 1:
        return {ordered[0][0]: 1.0}
    ranks: dict[str, float] = {}
    i = 0
    while i < n:
        j = i
        while j + 1 < n and ordered[j + 1][1] == ordered[i][1]:
            j += 1
        for k in range(i, j + 1):
            ranks[ordered[k][0]] = (i + j) / 2
        i = j + 1
    return {m: 1 - r / (n - 1) for m, r in ranks.items()}


def ladder(
    estimates: Iterable[Estimate], budget_bytes: int, quality: Mapping[str, Quality]
) -> list[tuple[Estimate, Quality | None]]:
    """The estimates whose process peak fits ``budget_bytes``: by measured quality when known
    (methods without results after those with), else by predicted memory."""
    fits = [e for e in estimates if e.peak_process_bytes <= budget_bytes]
    if quality:
        fits.sort(
            key=lambda e: (
                e.method not in quality,
                -(quality[e.method].score if e.method in quality else 0),
                e.peak_process_bytes,
            )
        )
    else:
        fits.sort(key=lambda e: e.peak_process_bytes)
    return [(e, quality.get(e.method)) for e in fits]


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Predict trainable parameters, adapter size and peak training memory of PEFT methods from a "
        "model's config alone (the model is built on the meta device; no weights are read)."
    )
    parser.epilog = MEMORY_MODEL
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", required=True, help="model spec name, shipped config name, path to config.json, or hub id"
    )
    parser.add_argument(
        "--method", action="append", default=None, help="method spec name (repeatable; default: every method)"
    )
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="tokens per sequence (default: the spec defaults' max_length)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sequences per step (default: the spec defaults)"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in backward",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adamw_torch", "adamw_bnb_8bit"),
        default=None,
        help="default: the spec defaults",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default=None,
        help="training precision (default: spec defaults; auto = bf16 autocast where supported)",
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="dtype of the full-precision base (default: the model spec's, else fp32)",
    )
    parser.add_argument(
        "--no-padding",
        dest="padded",
        action="store_false",
        help="equal-length sequences (no attention mask); default: padded batches, as the engine pads",
    )
    parser.add_argument(
        "--device", default="cpu", help="device the case trains on: cpu or cuda (default: %(default)s)"
    )
    parser.add_argument(
        "--budget",
        default=None,
        help="memory budget, e.g. 24GB, 24GiB, 24000MB, 12G (G = GB = 10^9 bytes): list the methods that fit",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per method, one per line")
    parser.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="spec directory (default: %(default)s)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="stored runs for the ladder's quality (default: %(default)s)",
    )


def _budget_from_args(store: SpecStore, args: argparse.Namespace) -> dict[str, Any]:
    given = {
        "max_length": args.seq_len,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optimizer": args.optimizer,
        "precision": args.precision,
    }
    return {k: v for k, v in given.items() if v is not None}


def training_budget(store: SpecStore, method: MethodSpec, overrides: Mapping[str, Any]) -> TrainingBudget:
    """The budget a case of ``method`` trains with: defaults < method < command line."""
    from peftcore.spec import deep_merge
    from peftcore.spec.schema import build

    merged: dict[str, Any] = dict(store.defaults.get("training", {}))
    for layer in (method.training, overrides):
        merged = deep_merge(merged, {k: v for k, v in layer.items() if v is not None})
    return build(TrainingBudget, merged, "command line", "training")


def run(args: argparse.Namespace) -> int:
    budget_bytes = parse_bytes(args.budget) if args.budget else None
    store = SpecStore(args.specs)
    names = args.method or list(store.names("methods"))
    methods = [store.get("methods", name) for name in names]
    info = resolve_model(args.model, args.specs, args.dtype)
    overrides = _budget_from_args(store, args)
    estimates: list[Estimate] = []
    failed: list[tuple[str, str]] = []
    for method in methods:
        budget = training_budget(store, method, overrides)
        try:
            estimates.append(_estimate(info, method, budget, args.device, args.padded))
        except PlannerError as err:
            if args.method:  # asked for by name: an error
                raise
            failed.append((method.name, str(err)))
    if args.json:
        for est in estimates:
            print(json.dumps(est.to_json()))
        for name, reason in failed:
            print(json.dumps({"method": name, "model": info.name, "error": reason}))
    else:
        _print_table(info, estimates, failed)
    if budget_bytes is not None:
        quality, how = measured_quality(args.results, info.name, store)
        fitting = ladder(estimates, budget_bytes, quality)
        out = sys.stderr if args.json else sys.stdout
        _print_ladder(fitting, args.budget, budget_bytes, how, out)
    return 0


def _print_table(info: ModelInfo, estimates: Sequence[Estimate], failed: Sequence[tuple[str, str]]) -> None:
    if estimates:
        e0 = estimates[0]
        print(
            f"{info.name} ({info.source}), base {info.dtype}, device {e0.device}, {e0.precision} "
            f"activations, batch {e0.batch_size} x {e0.seq_len} tokens"
            + (", gradient checkpointing" if e0.gradient_checkpointing else "")
        )
    header = (
        "method",
        "trainable",
        "%",
        "adapter",
        "base",
        "grads+optim",
        "activ.",
        "logits",
        "peak case",
        "+framework",
    )
    rows = []
    for e in estimates:
        pct = 100 * e.trainable_params / e.total_params if e.total_params else 0.0
        rows.append(
            (
                e.method,
                f"{e.trainable_params:,}",
                f"{pct:.2f}",
                format_bytes(e.adapter_bytes),
                format_bytes(e.part("base_weights")),
                format_bytes(e.part("gradients") + e.part("optimizer_states")),
                format_bytes(e.part("activations") + e.part("autocast_copies")),
                format_bytes(e.part("loss_logits")),
                format_bytes(e.peak_case_bytes),
                format_bytes(e.peak_process_bytes),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, reason in failed:
        print(f"{name}: not applicable: {reason}")
    print(
        "peak case = what PeakMemory measures (above the level before the case); "
        "+framework adds the process's fixed cost."
    )


def _print_ladder(
    fitting: Sequence[tuple[Estimate, Quality | None]], given: str, budget: int, how: str, out: Any
) -> None:
    print(f"\nmethods that fit {given} (= {format_bytes(budget)}; peak case + framework):", file=out)
    if not fitting:
        print("  none", file=out)
    for rank, (e, q) in enumerate(fitting, 1):
        score = f"quality {q.score:.2f} over {q.tasks} task(s)" if q else "no stored results"
        print(f"  {rank}. {e.method}: {format_bytes(e.peak_process_bytes)}; {score}", file=out)
    print("  ordered by " + (how if how else "predicted memory (no stored results)"), file=out)
