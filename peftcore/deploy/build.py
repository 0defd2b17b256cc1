"""Building each deployment variant from a saved adapter, and loading it as it would be deployed.

- :func:`merge` loads the base in full precision (the model spec's dtype, fp32 by default) and
  folds the saved adapter into it with peft's ``merge_and_unload``. An adapter trained on a
  4-bit or 8-bit base (QLoRA, 8-bit LoRA) is merged into that full-precision reload, the
  standard recipe: merging into quantized weights would round the update away.
- :func:`save_merged` writes the merged model and tokenizer (safetensors), the folder every
  other variant is made from.
- :func:`load_bnb` quantizes the merged folder after training with bitsandbytes as it loads it
  (``BitsAndBytesConfig``: LLM.int8, or 4-bit NF4/FP4 with optional double quantization).
- GGUF files are written and read by :mod:`peftcore.deploy.gguf_file`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.models.load import load_base, quantization_config, torch_dtype
from peftcore.spec import BaseOptions, MethodSpec, ModelSpec
from peftcore.train.methods import load_trained
from peftcore.vocab.variants import mergeable


class NotBuilt(Exception):
    """A variant that cannot be made for this case (not a failure): the reason says why."""


@dataclass(frozen=True)
class Merged:
    model: Any
    tokenizer: Any
    merged_into: str  # what the adapter was folded into, e.g. "fp32 reload of the base"
    trained_on: str  # the base the adapter was trained on: none | nf4 | int8 | fp4
    tool: str  # what merged it


def merge(spec: ModelSpec, method: MethodSpec, adapter_dir: Path | None, device: str) -> Merged:
    """The case's model with its adapter merged into a full-precision reload of its base.

    ``none`` (the untrained base) is its own merged model. NotBuilt for a tuner that cannot
    merge, and for full fine-tuning or an adapter whose weights were not kept.
    """
    if not mergeable(method.tuner):
        raise NotBuilt(f"not mergeable: {method.tuner} adds virtual tokens, no weights to merge them into")
    if method.tuner == "full":
        raise NotBuilt("full fine-tuning keeps no weights to deploy (only its size is measured)")
    base = load_base(spec, BaseOptions(quantization="none"), device)
    into = f"{spec.dtype} reload of the base"
    if method.tuner == "none":
        return Merged(base.model, base.tokenizer, into, "none", "none: the untrained base")
    if adapter_dir is None or not (adapter_dir / "adapter_config.json").is_file():
        raise NotBuilt(f"the case's adapter is not on disk ({adapter_dir})")
    import peft

    model = merge_adapter(base.model, adapter_dir, method)
    return Merged(
        model, base.tokenizer, into, method.base.quantization, f"peft {peft.__version__} merge_and_unload"
    )


def merge_adapter(base_model: Any, adapter_dir: Path, method: MethodSpec) -> Any:
    """``base_model`` (full precision, changed in place) with the saved adapter merged into it."""
    with warnings.catch_warnings():
        # peft warns that merging an adapter trained on a quantized base into full-precision
        # weights may give slightly different outputs: that difference is what is measured.
        warnings.filterwarnings("ignore", message=".*merg.*", category=UserWarning)
        model = load_trained(base_model, adapter_dir, method).merge_and_unload()
    return model.eval()


def save_merged(merged: Merged, folder: Path) -> int:
    """Write the merged model and its tokenizer into ``folder``; bytes of its safetensors."""
    merged.model.save_pretrained(folder, safe_serialization=True)
    merged.tokenizer.save_pretrained(folder)
    return safetensors_bytes(folder)


def safetensors_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.is_file())


def load_merged(folder: Path, spec: ModelSpec, device: str) -> Any:
    """The merged folder loaded as a plain full-precision model."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch_dtype(spec.dtype), device_map={"": device}, use_safetensors=True
    )
    return model.eval()


def bnb_options(kind: str, double_quant: bool, compute_dtype: str) -> BaseOptions:
    return BaseOptions(quantization=kind, double_quant=double_quant, compute_dtype=compute_dtype)  # type: ignore[arg-type]


def load_bnb(folder: Path, options: BaseOptions, device: str) -> Any:
    """The merged folder quantized by bitsandbytes as it loads (post-training quantization)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        folder,
        dtype=torch_dtype(options.compute_dtype),
        quantization_config=quantization_config(options),
        device_map={"": device},
        use_safetensors=True,
    )
    return model.eval()
