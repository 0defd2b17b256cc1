"""Loading a base model: one variant (full precision, NF4/FP4 or int8) per session, copied per case."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from peftcore.errors import AssetError
from peftcore.models.checkpoints import checkpoint_dir, model_sha256
from peftcore.spec import BaseOptions, ModelSpec

if TYPE_CHECKING:
    import torch

# --------------------------------------------------------------------------- loading

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return getattr(torch, _DTYPES[name])


def quantization_config(options: BaseOptions) -> Any:
    """The bitsandbytes config of a method's base options, or None for full precision."""
    if options.quantization == "none":
        return None
    from transformers import BitsAndBytesConfig

    if options.quantization == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=options.quantization,
        bnb_4bit_use_double_quant=options.double_quant,
        bnb_4bit_compute_dtype=torch_dtype(options.compute_dtype),
    )


@dataclass
class LoadedBase:
    """A base model as loaded for one variant; ``fresh()`` gives each case its own copy."""

    spec: ModelSpec
    options: BaseOptions
    model: Any
    tokenizer: Any
    load_seconds: float
    footprint_bytes: int
    sha256: str
    device: str

    def fresh(self) -> Any:
        """A pristine deep copy: adapters injected or weights trained never reach the template."""
        import copy

        return copy.deepcopy(self.model)

    def describe(self) -> dict[str, Any]:
        return {
            "load_seconds": round(self.load_seconds, 3),
            "footprint_bytes": self.footprint_bytes,
            "quantization": self.options.quantization,
            "double_quant": self.options.double_quant
            if self.options.quantization in ("nf4", "fp4")
            else None,
            "compute_dtype": self.options.compute_dtype if self.options.quantization != "none" else None,
            "dtype": self.spec.dtype if self.options.quantization == "none" else self.options.compute_dtype,
            "device": self.device,
            "sha256": self.sha256,
        }


def _keep_4bit_weights_dequantizable(model: Any) -> None:
    """Keep bitsandbytes from repacking 4-bit weights for its CPU kernel.

    On a CPU with AVX-512 BF16, bitsandbytes (0.50) repacks a ``Linear4bit`` weight in place
    into its CPU kernel's layout at the first forward in eval mode. Its own forward keeps
    working, but peft's ``dequantize_module_weight`` (DoRA's weight norm, merging an adapter
    into its base) then reads the repacked bytes as NF4 and gets garbage: a QDoRA adapter that
    reached a training loss of 0.39 scored a loss of 20.8 on the same batch in eval mode. With
    the flag off, the layer dequantizes and multiplies in every mode, as on a GPU. (Costs the
    faster CPU kernel in scoring, and moves QLoRA's scores a little: the same adapter's eval
    loss on one batch went from 0.411 to 0.423, the kernel computing otherwise in bf16.)
    """
    for module in model.modules():
        if getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def detach_from_file(model: Any) -> None:
    """Copy memory-mapped weights into process memory.

    safetensors tensors are mapped from the checkpoint file; the first case to copy them would
    otherwise page the file in inside its measured window and report a larger peak than the
    cases after it.
    """
    import torch

    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if type(tensor) in (torch.nn.Parameter, torch.Tensor) and tensor.device.type == "cpu":
                tensor.data = tensor.data.clone()


def load_tokenizer(spec: ModelSpec, where: str | None = None) -> Any:
    from transformers import AutoTokenizer

    where = where or checkpoint_dir(spec)
    tokenizer = AutoTokenizer.from_pretrained(
        where, revision=spec.source.revision, trust_remote_code=spec.trust_remote_code
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_base(spec: ModelSpec, options: BaseOptions, device: str) -> LoadedBase:
    """Load one variant (full precision, NF4/FP4 or int8) of a model onto ``device``."""
    from transformers import AutoModelForCausalLM

    start = time.perf_counter()
    where = checkpoint_dir(spec)
    quant = quantization_config(options)
    # Quantized layers compute in compute_dtype; the rest of the model (embeddings, norms) is
    # held in the same dtype, as in the QLoRA recipe.
    dtype = torch_dtype(spec.dtype if quant is None else options.compute_dtype)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            where,
            revision=spec.source.revision,
            dtype=dtype,
            quantization_config=quant,
            device_map={"": device},
            use_safetensors=True,
            trust_remote_code=spec.trust_remote_code,
        )
    except OSError as err:
        if spec.source.kind == "hub":
            raise AssetError(
                f"{spec.file}: cannot load {spec.source.id!r} from the hub ({str(err).splitlines()[0]}); "
                "offline, point source.kind: local at a downloaded folder instead"
            ) from None
        raise
    detach_from_file(model)
    _keep_4bit_weights_dequantizable(model)
    model.eval()
    tokenizer = load_tokenizer(spec, where)
    return LoadedBase(
        spec=spec,
        options=options,
        model=model,
        tokenizer=tokenizer,
        load_seconds=time.perf_counter() - start,
        footprint_bytes=int(model.get_memory_footprint()),
        sha256=model_sha256(spec),
        device=device,
    )
