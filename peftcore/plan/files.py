"""What ``save_pretrained`` writes after training a method: its weight files and their sizes.

For a peft method, the tensors of peft's ``get_peft_model_state_dict``; for ``full``, the model's
state dict without tied copies, split into shards as transformers splits it. Each file's size is
laid out as the safetensors library lays it out: the 8-byte header length, the JSON header padded
to a multiple of 8, then the data. Everything is read from a meta model: no bytes are written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.spec import MethodSpec

# torch dtype name -> (safetensors dtype, rank); safetensors orders tensors by this rank
# (descending), then by name, and the order moves the offsets written in the header.
SAFETENSORS_DTYPES = {
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
    """One tensor as a file holds it: name, dtype, shape and bytes per value."""

    name: str
    dtype: str  # torch dtype name without "torch.", e.g. float32
    shape: tuple[int, ...]
    itemsize: int

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize


def tensor_info(name: str, tensor: Any) -> TensorInfo:
    """The ``TensorInfo`` of a torch tensor (a meta tensor is fine: only its metadata is read)."""
    return TensorInfo(
        name, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), tensor.element_size()
    )


def safetensors_file_bytes(tensors: Sequence[TensorInfo], metadata: Mapping[str, str] | None = None) -> int:
    """The size in bytes of the safetensors file holding ``tensors`` (and ``metadata`` in its
    header). KeyError for a dtype safetensors cannot store."""
    order = sorted(tensors, key=lambda t: (-SAFETENSORS_DTYPES[t.dtype][1], t.name))
    header: dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for t in order:
        header[t.name] = {
            "dtype": SAFETENSORS_DTYPES[t.dtype][0],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + t.nbytes],
        }
        offset += t.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    padded = len(text) + (-len(text)) % 8
    return 8 + padded + offset


def adapter_tensors(model: Any) -> list[TensorInfo]:
    """The tensors ``save_pretrained`` writes for a peft model (a method other than full/none)."""
    from peft.utils import get_peft_model_state_dict
    from peft.utils.constants import EMBEDDING_LAYER_NAMES

    if getattr(model, "peft_config", None) and model.peft_config["default"].is_prompt_learning:
        return [TensorInfo("prompt_embeddings", *_prompt_embedding(model))]
    # save_pretrained's "auto" also saves embeddings when their vocabulary was resized against the
    # base's hub config (a hub lookup); a config-only estimate never resizes: only "targeted" counts.
    targets = getattr(model.peft_config["default"], "target_modules", None)
    targeted = isinstance(targets, (set, list, tuple)) and any(k in targets for k in EMBEDDING_LAYER_NAMES)
    state = get_peft_model_state_dict(model, save_embedding_layers=targeted)
    return [tensor_info(name, tensor) for name, tensor in state.items()]


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
        (file, [tensor_info(name, state[name]) for name in names])
        for file, names in split.filename_to_tensors.items()
    ]


def saved_files(model: Any, method: MethodSpec) -> list[tuple[str, int]]:
    """(file name, bytes) of the weight files ``save_pretrained`` writes after training ``method``
    on ``model`` (the meta model ``apply_meta`` returns); none for the untrained ``none``."""
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
