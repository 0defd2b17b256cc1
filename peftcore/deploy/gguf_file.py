"""A merged model written as a GGUF file with the ``gguf`` package, and read back by transformers.

Only the Llama architecture (the default model's) is written: the tensor names come from gguf's
own name map, the hyperparameters from the model's config, and the query and key projections
are permuted into the rotary layout llama.cpp expects (transformers undoes it on reading). The
tokenizer comes from the GGUF the model was converted from when there is one (its fields
copied unchanged), else from a byte-level BPE tokenizer (vocabulary and merges), which is what
llama.cpp needs to run the file; transformers reads the weights back without it.

Norms and other 1-D tensors stay F32 (as llama.cpp writes them); a matrix whose rows do not
split into the type's blocks is written F16 and counted in :class:`GgufWritten`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.storage import atomic_file


@dataclass(frozen=True)
class GgufWritten:
    path: Path
    type: str  # the GGUF type of the matrices, e.g. Q8_0
    tensors: int
    fallback_f16: int  # matrices written F16 because their rows do not fit the type's blocks
    bytes: int


def _rope_theta(config: Any) -> float:
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return float(theta)


def permute_rotary(weight: Any, n_head: int) -> Any:
    """Reorder a query or key projection's rows from transformers' rotary layout (halves) to
    llama.cpp's (interleaved pairs), per head; transformers' GGUF reader applies the inverse."""
    rows = weight.shape[0]
    return (
        weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
    )


def write_gguf(
    model: Any, tokenizer: Any, path: Path, gguf_type: str, source_gguf: Path | None = None
) -> GgufWritten:
    """Write ``model`` (a plain transformers Llama model, any float dtype) to ``path`` as GGUF.

    ``gguf_type``: the matrices' type as gguf names it (F32, F16, BF16, Q8_0, Q4_0, ...).
    Raises ValueError for another architecture or a type gguf cannot write; the file is written
    atomically.
    """
    import gguf
    import numpy as np
    import torch

    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"GGUF export supports the llama architecture, not {config.model_type!r}")
    qtype = gguf.GGMLQuantizationType[gguf_type]
    arch = gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.LLAMA]
    n_blocks = int(config.num_hidden_layers)
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_blocks)
    n_head, n_kv = int(config.num_attention_heads), int(config.num_key_value_heads)
    head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // n_head)
    block_size = gguf.GGML_QUANT_SIZES[qtype][0]
    tied = bool(getattr(config, "tie_word_embeddings", False))
    with atomic_file(path) as tmp:
        writer = gguf.GGUFWriter(tmp, arch)
        writer.add_name(str(getattr(config, "name_or_path", "") or "peftcore merged model"))
        writer.add_context_length(int(config.max_position_embeddings))
        writer.add_embedding_length(int(config.hidden_size))
        writer.add_block_count(n_blocks)
        writer.add_feed_forward_length(int(config.intermediate_size))
        writer.add_head_count(n_head)
        writer.add_head_count_kv(n_kv)
        writer.add_rope_freq_base(_rope_theta(config))
        writer.add_rope_dimension_count(head_dim)
        writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
        writer.add_vocab_size(int(config.vocab_size))
        file_type = gguf.LlamaFileType["ALL_F32" if gguf_type == "F32" else f"MOSTLY_{gguf_type}"]
        writer.add_file_type(int(file_type))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _add_tokenizer(writer, tokenizer, source_gguf)
        count = fallback = 0
        state = model.state_dict()
        for name, tensor in state.items():
            if tied and name == "lm_head.weight":
                continue  # llama.cpp and transformers reuse token_embd when output is absent
            base, _, suffix = name.rpartition(".")
            target = names.get_name(base)
            if target is None:
                raise ValueError(f"no GGUF name for tensor {name!r} of a llama model")
            data = tensor.detach().to(torch.float32).cpu().numpy()
            if base.endswith("self_attn.q_proj"):
                data = permute_rotary(data, n_head)
            elif base.endswith("self_attn.k_proj"):
                data = permute_rotary(data, n_kv)
            full = f"{target}.{suffix}"
            if data.ndim == 1 or qtype == gguf.GGMLQuantizationType.F32:
                writer.add_tensor(full, data.astype(np.float32))
            elif qtype == gguf.GGMLQuantizationType.F16 or data.shape[-1] % block_size:
                fallback += qtype != gguf.GGMLQuantizationType.F16
                writer.add_tensor(full, data.astype(np.float16))
            else:
                writer.add_tensor(full, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            count += 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return GgufWritten(path, gguf_type, count, fallback, path.stat().st_size)


def _add_tokenizer(writer: Any, tokenizer: Any, source_gguf: Path | None) -> None:
    """The tokenizer fields: copied from the source GGUF, else built from a byte-level BPE."""
    import gguf

    if source_gguf is not None:
        reader = gguf.GGUFReader(source_gguf)
        for key, field in reader.fields.items():
            if key.startswith("tokenizer."):
                kind = field.types[0]
                sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
                writer.add_key_value(key, field.contents(), kind, sub_type=sub)
        return
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    model = backend.get("model") or {}
    if model.get("type") != "BPE":
        raise ValueError(f"GGUF export needs a BPE tokenizer or a source GGUF, not {model.get('type')!r}")
    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, index in vocab.items():
        tokens[index] = token
    special = set(tokenizer.all_special_ids)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL for i in range(len(tokens))]
    )
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])])
    for setter, value in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if value is not None:
            setter(int(value))
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def load_gguf(path: Path) -> Any:
    """The GGUF file read back by transformers (dequantized to fp32), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def tensor_types(path: Path) -> dict[str, int]:
    """How many tensors of each GGUF type ``path`` holds (``{"Q4_K": 8, "Q6_K": 2, "F32": 5}``).

    llama-quantize mixes types within one file type (Q4_K_M keeps some matrices Q6_K) and falls
    back to another type for a matrix whose rows do not split into 256-wide super-blocks, so the
    file's types are read back rather than assumed.
    """
    import gguf

    counts: dict[str, int] = {}
    for tensor in gguf.GGUFReader(path).tensors:
        name = tensor.tensor_type.name
        counts[name] = counts.get(name, 0) + 1
    return dict(sorted(counts.items()))
