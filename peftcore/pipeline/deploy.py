"""Deployment variants of a finished case: built from its saved adapter, measured, scored, recorded.

A profile asks for them (without it nothing here runs)::

    deploy:
      variants: [merged, int8, nf4, gguf-f16, gguf-q8_0]
      double_quant: true

After a case has its finished record (run, re-scored, adopted or resumed), the session calls
:func:`deploy_case`. The adapter saved by the case is merged into a full-precision reload of the
base (:mod:`peftcore.deploy.build`); every variant is made from that merged model, written to
disk (its size), loaded as it would be deployed (its load time), and scored on the case's
held-out and seen examples with the case's evaluator and settings (metrics, latency, examples/s,
inference peak memory). A GGUF variant is also run by llama.cpp when llama-cpp-python is
installed (generation tokens/s). A K-quant GGUF variant (gguf-q4_k_m, ...) is the F16 file
quantized by llama.cpp's llama-quantize, built once by ``make llama-cpp``
(:mod:`peftcore.deploy.llama_tools`); transformers dequantizes K-quants on reading (gguf's
numpy dequantizers), so it is scored as the other GGUF variants are.

Each variant's figures go to ``record["deploy"][<variant>]`` with its ``variant_hash`` (the
case's hash, the variant and its settings); a variant already in the record with the same hash
is kept, so a rerun builds only what is missing. A variant that cannot be made for the case
(a tuner that cannot merge, full fine-tuning without kept weights) is recorded as
``not_mergeable`` / ``skipped`` with the reason; one that fails is ``failed`` with the error,
and the other variants still run.
"""

from __future__ import annotations

import gc
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from peftcore.data.example import TaskData
from peftcore.measure import release_freed_memory
from peftcore.pipeline.failures import one_line
from peftcore.results.store import write_record
from peftcore.spec.cases import Case
from peftcore.vocab.record import Record, keep_scores
from peftcore.vocab.variants import Variant, parse_variant

REUSED = ("finished", "not_mergeable", "skipped")


def variant_hash(case_hash: str, variant: Variant, case: Case) -> str:
    """What determines a variant's figures besides the case: its name, its settings, the tools."""
    settings = case.deploy
    material: dict[str, Any] = {
        "case_hash": case_hash,
        "variant": variant.name,
        "bnb": [settings.double_quant, settings.compute_dtype] if variant.kind == "bnb" else None,
        "llama_cpp": [settings.generate_tokens, settings.prompts, settings.threads]
        if variant.kind == "gguf"
        else None,
        "versions": {name: _version(name) for name in ("gguf", "llama-cpp-python")},
    }
    bench = _bench_tool() if variant.kind == "gguf" else None
    if bench is not None:  # absent: the hashes stay as they were
        material["llama_bench"] = [settings.bench_prompt_tokens, settings.bench_repetitions, bench]
    if variant.writer == "llama-quantize":  # only here: the other variants' hashes stay as they were
        material["llama_quantize"] = _quantize_tool()
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def _bench_tool() -> dict[str, Any] | None:
    """What identifies the llama-bench a GGUF variant is timed with, None when it is not built."""
    from peftcore.deploy import llama_tools

    if llama_tools.find_tools() is None:
        return None
    return _quantize_tool()


def _quantize_tool() -> dict[str, Any] | None:
    """What identifies the llama-quantize that made a variant: its source and the CPU built for."""
    from peftcore.deploy import llama_tools

    provenance = llama_tools.tools_provenance()
    return None if provenance is None else {"source": provenance.get("source"), "cpu": provenance.get("cpu")}


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def pending(case: Case, record: Record) -> list[Variant]:
    """The variants the case asks for that its record does not carry (with the same hash)."""
    done = record.get("deploy") or {}
    case_hash = str(record.get("case_hash") or "")
    todo = []
    for name in case.deploy.variants:
        variant = parse_variant(name)
        block = done.get(variant.name) or {}
        if block.get("status") in REUSED and block.get("variant_hash") == variant_hash(
            case_hash, variant, case
        ):
            continue
        todo.append(variant)
    return todo


def deploy_case(case: Case, record: Record, run_dir: Path, data: TaskData, device: str) -> Record | None:
    """Build, measure and score the case's missing variants; write and return the record with
    them (a new record: ``record`` is left as it was), or None when nothing was missing.

    Only a finished record is deployed. Ctrl-C propagates (the written record keeps the
    variants finished so far).
    """
    if record.get("status") != "finished" or not case.deploy.variants:
        return None
    todo = pending(case, record)
    if not todo:
        return None
    blocks: dict[str, Any] = dict(record.get("deploy") or {})
    deployed: Record = {**record, "deploy": blocks}
    case_hash = str(record.get("case_hash") or "")
    relative = record.get("adapter_dir")
    adapter = (run_dir / relative).resolve() if relative else None
    folder = run_dir / "deploy" / record["case_id"]
    folder.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
    try:
        _build_all(case, todo, adapter, scratch, folder, data, device, blocks, case_hash)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
        release_freed_memory()
        write_record(run_dir, deployed)
    return deployed


def _build_all(
    case: Case,
    todo: list[Variant],
    adapter: Path | None,
    scratch: Path,
    keep_in: Path,
    data: TaskData,
    device: str,
    blocks: dict[str, Any],
    case_hash: str,
) -> None:
    from peftcore.deploy import build

    def note(variant: Variant, block: dict[str, Any]) -> None:
        blocks[variant.name] = {
            "kind": variant.kind,
            "writer": variant.writer,
            "variant_hash": variant_hash(case_hash, variant, case),
            **block,
        }

    start = time.perf_counter()
    try:
        merged = build.merge(case.model, case.method, adapter, device)
    except build.NotBuilt as err:
        status = "not_mergeable" if str(err).startswith("not mergeable") else "skipped"
        for variant in todo:
            note(variant, {"status": status, "reason": str(err)})
        return
    except Exception as err:
        for variant in todo:
            note(variant, {"status": "failed", "reason": f"merging: {one_line(err)}"})
        return
    merged_folder = scratch / "merged"
    try:
        merged_bytes = build.save_merged(merged, merged_folder)
    except OSError as err:
        for variant in todo:
            note(variant, {"status": "failed", "reason": f"saving the merged model: {one_line(err)}"})
        return
    merge_seconds = time.perf_counter() - start
    provenance = {
        "merged_with": merged.tool,
        "merged_into": merged.merged_into,
        "trained_on": merged.trained_on,
        "adapter_dir": str(adapter) if adapter else None,
    }
    for variant in todo:
        try:
            block = _one_variant(case, variant, merged, merged_folder, merged_bytes, scratch, data, device)
            block["build_seconds"] = round(merge_seconds + block.pop("extra_build_seconds", 0.0), 3)
            note(variant, {"status": "finished", "reason": None, **block, "provenance": provenance})
            if case.deploy.keep_files and block.get("file"):
                kept = keep_in / variant.name
                shutil.rmtree(kept, ignore_errors=True)
                shutil.move(str(scratch / variant.name), kept)
        except KeyboardInterrupt:
            raise
        except Exception as err:
            note(variant, {"status": "failed", "reason": one_line(err), "provenance": provenance})
        finally:
            gc.collect()
    del merged
    release_freed_memory()


def _one_variant(
    case: Case,
    variant: Variant,
    merged: Any,
    merged_folder: Path,
    merged_bytes: int,
    scratch: Path,
    data: TaskData,
    device: str,
) -> dict[str, Any]:
    from peftcore.deploy import build, gguf_file

    settings = case.deploy
    block: dict[str, Any] = {}
    out = scratch / variant.name  # the merged variant's folder is the merged model's own
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if variant.kind == "merged":
        model = build.load_merged(merged_folder, case.model, device)
        load_seconds = time.perf_counter() - start
        block["tool"] = merged.tool
        size = merged_bytes
    elif variant.kind == "bnb":
        options = build.bnb_options(variant.type, settings.double_quant, settings.compute_dtype)
        model = build.load_bnb(merged_folder, options, device)
        load_seconds = time.perf_counter() - start
        block["tool"] = f"bitsandbytes {_version('bitsandbytes')}"
        block["quantization"] = {
            "type": variant.type,
            "double_quant": settings.double_quant if variant.type != "int8" else None,
            "compute_dtype": settings.compute_dtype if variant.type != "int8" else None,
        }
        model.save_pretrained(out, safe_serialization=True)
        size = build.safetensors_bytes(out)
        block["footprint_bytes"] = int(model.get_memory_footprint())
    else:
        path = _write_gguf(variant, merged, out, scratch, block, case)
        block["extra_build_seconds"] = time.perf_counter() - start
        size = path.stat().st_size
        start = time.perf_counter()
        model = gguf_file.load_gguf(path)
        load_seconds = time.perf_counter() - start
    block["load_seconds"] = round(load_seconds, 3)
    block["size_bytes"] = int(size)
    block["file"] = str(out.name)
    block.update(_score(case, model, merged.tokenizer, data, device))
    del model
    gc.collect()
    if variant.kind == "gguf":
        block["llama_cpp"] = _llama_cpp(case, out / f"model-{variant.type}.gguf", data)
        block["llama_bench"] = _llama_bench(case, out / f"model-{variant.type}.gguf")
    return block


def _write_gguf(
    variant: Variant, merged: Any, out: Path, scratch: Path, block: dict[str, Any], case: Case
) -> Path:
    """The variant's GGUF file, ``out/model-<TYPE>.gguf``; its tool and tensor types into ``block``.

    A type the gguf package writes is written directly. A llama-quantize type is written F16
    first (as gguf-f16 is), then quantized by ``llama-quantize <f16> <out> <TYPE> <threads>``
    with as many threads as this process may use; the F16 file is removed after. RuntimeError
    when the tools are not built (collection checks that first) or llama-quantize fails.
    """
    from peftcore.deploy import gguf_file, llama_tools
    from peftcore.models.checkpoints import gguf_path

    source = gguf_path(case.model) if case.model.source.kind == "gguf_package" else None
    path = out / f"model-{variant.type}.gguf"
    reader = f"read by transformers {_version('transformers')}"
    if variant.writer == "gguf":
        written = gguf_file.write_gguf(merged.model, merged.tokenizer, path, variant.type, source)
        block["tool"] = f"gguf {_version('gguf')} (Python writer); {reader}"
        block["gguf"] = {
            "type": written.type,
            "tensors": written.tensors,
            "fallback_f16": written.fallback_f16,
        }
        return path
    tools = llama_tools.find_tools()
    if tools is None:
        raise RuntimeError(llama_tools.missing_reason())
    f16_path = scratch / f".{variant.name}-F16.gguf"
    f16 = gguf_file.write_gguf(merged.model, merged.tokenizer, f16_path, "F16", source)
    threads = _cpu_count()
    try:
        output = llama_tools.quantize(tools, f16.path, path, variant.type, threads)
    finally:
        f16.path.unlink(missing_ok=True)
    provenance = llama_tools.tools_provenance() or {}
    block["tool"] = (
        f"llama.cpp llama-quantize ({llama_tools.SOURCE_PACKAGE} {llama_tools.SOURCE_VERSION} source) "
        f"from an F16 GGUF written by gguf {_version('gguf')}; {reader}"
    )
    block["gguf"] = {
        "type": variant.type,
        "tensors": f16.tensors,
        "from": "F16",
        "tensor_types": gguf_file.tensor_types(path),
        "fallback": llama_tools.fallback_tensors(output),  # rows not a multiple of 256
    }
    block["llama_quantize"] = {"threads": threads, "folder": str(tools.folder), "build": provenance}
    return path


def _cpu_count() -> int:
    """The CPUs this process may run on (its affinity), not the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _score(case: Case, model: Any, tokenizer: Any, data: TaskData, device: str) -> dict[str, Any]:
    from peftcore import score as scoring
    from peftcore.device import scoring_precision
    from peftcore.train.prompting import PromptFormat

    fmt = PromptFormat.for_model(tokenizer, case.model.chat_template)
    precision = scoring_precision(case.eval.precision)
    block: dict[str, Any] = {"metrics": {}, "inference": None}
    for split in ("held_out", "seen"):
        examples = data.split(split)
        if not examples:
            continue
        result = scoring.score(model, fmt, examples, case.task, case.eval, device=device, precision=precision)
        keep_scores(block, split, result)
        if split == "held_out":
            block["inference"] = result.inference
    return block


def _llama_cpp(case: Case, path: Path, data: TaskData) -> dict[str, Any]:
    from peftcore.deploy.llama_cpp import generation_speed, llama_cpp_missing

    missing = llama_cpp_missing()
    if missing:
        return {"status": "skipped", "reason": missing}
    settings = case.deploy
    prompts = [example.prompt for example in data.held_out[: settings.prompts]]
    try:
        return {
            "status": "finished",
            **generation_speed(path, prompts, settings.generate_tokens, settings.threads),
        }
    except Exception as err:
        return {"status": "failed", "reason": one_line(err)}


def _llama_bench(case: Case, path: Path) -> dict[str, Any]:
    """llama-bench's prompt and generation tokens/s and peak memory on the variant's file;
    ``skipped`` (why) when the tools are not built, ``failed`` (the error) when it fails."""
    from peftcore.deploy import llama_bench, llama_tools

    tools = llama_tools.find_tools()
    if tools is None:
        return {"status": "skipped", "reason": llama_tools.missing_reason()}
    settings = case.deploy
    try:
        return llama_bench.run_bench(
            tools,
            path,
            threads=settings.threads,
            prompt_tokens=settings.bench_prompt_tokens,
            generate_tokens=settings.generate_tokens,
            repetitions=settings.bench_repetitions,
        )
    except llama_bench.BenchError as err:
        return {"status": "failed", "reason": one_line(err)}
