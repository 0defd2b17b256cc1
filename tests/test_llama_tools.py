"""llama.cpp's tools (peftcore.deploy.llama_tools) and the K-quant GGUF variants they make.

Fast: the variant names and their errors, the missing-toolchain message, the collection check
that a profile's K-quant variant needs the tools, the cache key's dependence on the CPU. Slow
and skipped with the reason until ``make llama-cpp`` has built the tools: the names against the
built ``llama-quantize --help``, and a real quantize of the tiny Llama to Q4_K_M.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from peftcore.deploy import llama_tools
from peftcore.errors import AssetError, SpecError
from peftcore.vocab.variants import GGUF_TYPES, LLAMA_QUANTIZE_TYPES, needs_llama_quantize, parse_variant

CPUINFO = """\
processor\t: 0
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f
processor\t: 1
model name\t: AMD EPYC
flags\t\t: fpu sse2 avx2 avx512f
"""
# What llama-quantize prints after its options (tools/quantize/quantize.cpp, print_usage).
HELP_TABLE = """\
-----------------------------------------------------------------------------
 allowed quantization types
-----------------------------------------------------------------------------

   2  or  Q4_0    :  4.34G, +0.4685 ppl @ Llama-3-8B
  38  or  MXFP4_MOE :  MXFP4 MoE
  15  or  Q4_K    : alias for Q4_K_M
  15  or  Q4_K_M  :  4.58G, +0.1754 ppl @ Llama-3-8B
          COPY    : only copy tensors, no quantizing
"""


def _needs_tools() -> Any:
    """The built tools, or a skip saying what is missing and how to build it."""
    tools = llama_tools.find_tools()
    if tools is None:
        pytest.skip(llama_tools.missing_reason() or "llama.cpp's tools are not built")
    return tools


# --------------------------------------------------------------------------- variant names


@pytest.mark.parametrize(
    ("name", "canonical", "gguf_type", "writer"),
    [
        ("gguf-q4_k_m", "gguf-q4_k_m", "Q4_K_M", "llama-quantize"),
        ("gguf-Q5_K_M", "gguf-q5_k_m", "Q5_K_M", "llama-quantize"),
        ("gguf-q6_k", "gguf-q6_k", "Q6_K", "llama-quantize"),
        ("gguf-q2_k", "gguf-q2_k", "Q2_K", "llama-quantize"),
        ("gguf-q8_0", "gguf-q8_0", "Q8_0", "gguf"),
        ("gguf-f16", "gguf-f16", "F16", "gguf"),
    ],
)
def test_gguf_variants_name_their_type_and_what_makes_them(
    name: str, canonical: str, gguf_type: str, writer: str
) -> None:
    variant = parse_variant(name)
    assert (variant.name, variant.kind, variant.type) == (canonical, "gguf", gguf_type)
    assert variant.writer == writer


def test_each_k_quant_the_brief_names_is_offered() -> None:
    for name in ("q4_k_m", "q5_k_m", "q6_k", "q4_k_s", "q5_k_s", "q3_k_m", "q2_k"):
        assert name in LLAMA_QUANTIZE_TYPES
    assert not set(LLAMA_QUANTIZE_TYPES) & set(GGUF_TYPES)  # one writer per type


def test_an_unknown_gguf_type_lists_both_writers_types_in_one_line() -> None:
    with pytest.raises(ValueError) as err:
        parse_variant("gguf-iq2_xxs")
    message = str(err.value)
    assert "\n" not in message and "'iq2_xxs'" in message
    assert "gguf-q8_0" in message and "gguf-q4_k_m" in message and "llama-quantize" in message


def test_needs_llama_quantize_picks_the_k_quants_with_their_index() -> None:
    names = ["merged", "gguf-q8_0", "gguf-q4_k_m", "nf5", "gguf-q6_k"]
    assert needs_llama_quantize(names) == [(2, "gguf-q4_k_m"), (4, "gguf-q6_k")]


def test_quantize_types_reads_the_help_table() -> None:
    types = llama_tools.quantize_types("usage: llama-quantize [--help]\n  --pure : x\n" + HELP_TABLE)
    assert list(types) == ["Q4_0", "MXFP4_MOE", "Q4_K", "Q4_K_M", "COPY"]
    assert types["Q4_K"] == "alias for Q4_K_M"


# --------------------------------------------------------------------------- the build


def test_a_missing_toolchain_is_one_line_naming_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    monkeypatch.delenv("CXX", raising=False)
    message = llama_tools.missing_toolchain()
    assert message is not None and "\n" not in message
    assert "cmake" in message and "ninja" in message and "C++ compiler" in message
    assert "apt-get install cmake ninja-build g++" in message
    with pytest.raises(AssetError, match="apt-get install"):
        llama_tools.build_tools()


def test_the_cache_key_follows_the_cpu_model_and_flags() -> None:
    key = llama_tools.cpu_key(CPUINFO)
    assert key == llama_tools.cpu_key(CPUINFO.replace("avx2 avx512f", "avx512f avx2"))  # flag order
    assert key != llama_tools.cpu_key(CPUINFO.replace(" avx512f", ""))
    assert key != llama_tools.cpu_key(CPUINFO.replace("AMD EPYC", "Intel Xeon"))


def test_the_tools_folder_is_keyed_by_the_pinned_source_and_this_cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    folder = llama_tools.tools_folder()
    assert folder.parent == tmp_path / "llama-cpp"
    assert folder.name == f"llama-cpp-python-{llama_tools.SOURCE_VERSION}-{llama_tools.cpu_key()}"
    assert llama_tools.find_tools() is None and llama_tools.tools_provenance() is None
    reason = llama_tools.missing_reason()
    assert reason is not None and "\n" not in reason and "make llama-cpp" in reason and str(folder) in reason


def _fake_tools(folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in llama_tools.TOOLS:
        (folder / name).write_text("#!/bin/sh\n", encoding="utf-8")
        (folder / name).chmod(0o755)
    (folder / "build.json").write_text('{"source": {"version": "x"}}', encoding="utf-8")


def test_a_built_folder_is_found_and_not_built_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    monkeypatch.setattr(llama_tools, "missing_toolchain", lambda: None)
    _fake_tools(llama_tools.tools_folder())
    tools = llama_tools.find_tools()
    assert tools is not None and tools.quantize.name == "llama-quantize"
    assert llama_tools.missing_reason() is None
    assert llama_tools.tools_provenance() == {"source": {"version": "x"}}
    said: list[str] = []
    assert llama_tools.build_tools(say=said.append) == tools and said == []  # nothing downloaded


@pytest.mark.skipif(llama_tools.missing_toolchain() is not None, reason="cmake or a compiler is missing")
def test_a_failed_build_is_one_error_with_the_log_tail_and_its_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    source = tmp_path / "src"
    source.mkdir()
    (source / "CMakeLists.txt").write_text('message(FATAL_ERROR "broken on purpose")\n', encoding="utf-8")
    monkeypatch.setattr(llama_tools, "_fetch_source", lambda work, log, log_path: source)
    with pytest.raises(llama_tools.ToolBuildError) as err:
        llama_tools.build_tools(say=lambda _: None)
    message = str(err.value)
    log = llama_tools.tools_folder().parent / f"{llama_tools.tools_folder().name}.build.log"
    assert "broken on purpose" in message and f"full log: {log}" in message and log.is_file()
    assert llama_tools.find_tools() is None  # nothing half-built left in place


def test_a_k_quant_variant_without_the_tools_fails_naming_the_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    profile = tmp_path / "profiles" / "dep.yaml"
    with pytest.raises(SpecError) as err:
        llama_tools.require_tools([(2, "gguf-q4_k_m")], profile, "deploy.variants")
    message = str(err.value)
    assert "\n" not in message and str(profile) in message and "'deploy.variants[2]'" in message
    assert "'gguf-q4_k_m'" in message and "make llama-cpp" in message
    llama_tools.require_tools([], profile, "deploy.variants")  # nothing asked, nothing needed


def test_a_profile_with_a_k_quant_fails_at_collection_without_the_tools(
    pytester: pytest.Pytester, shipped_specs: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Before any case trains: the collection fails in one line naming the profile and key."""
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "empty-cache"))
    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(
        ".ini",
        pytest="[pytest]\npeftcore_specs = specs\naddopts = -p no:cacheprovider -p no:hypothesispytest\n",
    )
    profile = pytester.path / "specs" / "profiles" / "kq.yaml"
    profile.write_text(
        "description: K-quant\nmethods: [lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "deploy: {variants: [merged, gguf-q4_k_m]}\n",
        encoding="utf-8",
    )
    result = pytester.runpytest("--collect-only", "-q", "--profile", "kq")
    assert result.ret != 0
    said = f"spec error: {profile}: key 'deploy.variants[1]': 'gguf-q4_k_m' is made by llama.cpp's"
    line = next(line for line in result.outlines if line.startswith(said))
    assert "make llama-cpp" in line


# --------------------------------------------------------------------------- with the built tools


@pytest.mark.slow
def test_the_k_quant_names_are_the_ones_llama_quantize_lists() -> None:
    tools = _needs_tools()
    listed = llama_tools.quantize_types(llama_tools.quantize_help(tools))
    assert set(LLAMA_QUANTIZE_TYPES.values()) <= set(listed), sorted(listed)
    # every K-quant it lists (aliases aside) is offered
    k_quants = {name for name, text in listed.items() if "_K" in name and not text.startswith("alias")}
    assert k_quants == set(LLAMA_QUANTIZE_TYPES.values())


@pytest.mark.slow
def test_build_json_says_how_the_tools_were_made() -> None:
    _needs_tools()
    info = llama_tools.tools_provenance()
    assert info is not None
    assert info["source"]["package"] == llama_tools.SOURCE_PACKAGE
    assert info["source"]["version"] == llama_tools.SOURCE_VERSION
    assert info["cpu"]["key"] == llama_tools.cpu_key()
    assert info["cmake_flags"] == list(llama_tools.CMAKE_FLAGS)
    assert info["build_seconds"] > 0 and info["compiler"] and info["cmake"]


def _wide_tiny_llama(shipped_specs: Path) -> tuple[Any, Any]:
    """The tiny Llama at hidden size 256 (head size 64): rows that split into K-quant
    super-blocks of 256, so llama-quantize writes real K-quant tensors (at 64 it falls back)."""
    import torch
    from tiny_llama import tiny_config
    from transformers import LlamaConfig, LlamaForCausalLM

    from peftcore.models.load import load_tokenizer
    from peftcore.spec import SpecStore

    tokenizer = load_tokenizer(SpecStore(shipped_specs).get("models", "smollm2-135m"))
    wide = {"hidden_size": 256, "intermediate_size": 512, "head_dim": 64}
    config = LlamaConfig(**{**tiny_config(tokenizer).to_dict(), **wide})
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


@pytest.mark.slow
def test_k_quants_are_written_by_llama_quantize_and_read_back_by_transformers(
    tmp_path: Path, shipped_specs: Path
) -> None:
    """Q4_K_M mixes Q4_K and Q6_K matrices (norms stay F32); transformers dequantizes them, and
    the logits move further from the model's as the bits go down (Q6_K < Q4_K_M)."""
    tools = _needs_tools()
    import gguf
    import torch

    from peftcore.deploy.gguf_file import load_gguf, tensor_types, write_gguf

    torch.set_num_threads(1)
    model, tokenizer = _wide_tiny_llama(shipped_specs)
    f16 = write_gguf(model, tokenizer, tmp_path / "tiny-F16.gguf", "F16")
    ids = tokenizer(["The capital of France is Paris, and the film was wonderful."], return_tensors="pt")
    with torch.no_grad():
        reference = model(ids.input_ids).logits
    drops = {}
    for gguf_type, file_type in (("Q4_K_M", "MOSTLY_Q4_K_M"), ("Q6_K", "MOSTLY_Q6_K")):
        out = tmp_path / f"tiny-{gguf_type}.gguf"
        log = llama_tools.quantize(tools, f16.path, out, gguf_type, 1)
        assert llama_tools.fallback_tensors(log) == 0
        reader = gguf.GGUFReader(out)
        assert int(reader.fields["general.file_type"].contents()) == int(gguf.LlamaFileType[file_type])
        types = tensor_types(out)
        assert sum(types.values()) == f16.tensors
        with torch.no_grad():
            drops[gguf_type] = float((load_gguf(out)(ids.input_ids).logits - reference).abs().max())
        if gguf_type == "Q4_K_M":
            assert set(types) == {"F32", "Q4_K", "Q6_K"}, types
        else:
            assert set(types) == {"F32", "Q6_K"}, types
    assert 0 < drops["Q6_K"] < drops["Q4_K_M"] < 1.0, drops


@pytest.mark.slow
def test_a_k_quant_variant_is_written_with_its_tool_in_the_block(tmp_path: Path, shipped_specs: Path) -> None:
    """The pipeline's GGUF step for gguf-q4_k_m on the 64-wide tiny Llama: F16 first,
    llama-quantize, the F16 file gone, and the block naming the tool, its build, the file's
    tensor types and how many fell back."""
    _needs_tools()
    from types import SimpleNamespace

    import torch
    from tiny_llama import tiny_base

    from peftcore.pipeline.deploy import _write_gguf
    from peftcore.spec import SpecStore

    torch.set_num_threads(1)
    spec = SpecStore(shipped_specs).get("models", "smollm2-135m")
    base = tiny_base(spec)
    out, scratch = tmp_path / "gguf-q4_k_m", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    block: dict[str, Any] = {}
    merged = SimpleNamespace(model=base.model, tokenizer=base.tokenizer)
    case = SimpleNamespace(model=spec)
    path = _write_gguf(parse_variant("gguf-q4_k_m"), merged, out, scratch, block, case)  # type: ignore[arg-type]
    assert path == out / "model-Q4_K_M.gguf" and path.is_file()
    assert list(scratch.iterdir()) == []  # the F16 file is removed
    assert "llama-quantize" in block["tool"]
    assert block["gguf"]["type"] == "Q4_K_M" and block["gguf"]["from"] == "F16"
    assert sum(block["gguf"]["tensor_types"].values()) == block["gguf"]["tensors"]
    assert block["llama_quantize"]["build"]["source"]["version"] == llama_tools.SOURCE_VERSION
    # hidden size 64: no matrix splits into 256-wide super-blocks, each falls back (Q5_0, Q8_0)
    assert block["gguf"]["fallback"] > 0 and "Q4_K" not in block["gguf"]["tensor_types"]


def test_the_command_says_what_is_missing_or_where_the_tools_are(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from peftcore.cli import main

    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    assert main(["llama-cpp", "status"]) == 1
    assert "make llama-cpp" in capsys.readouterr().out
    _fake_tools(llama_tools.tools_folder())
    assert main(["llama-cpp", "status"]) == 0
    assert str(llama_tools.tools_folder()) in capsys.readouterr().out
    assert main(["llama-cpp", "build", "--jobs", "0"]) == 2
    assert "--jobs: expected a positive integer, got 0" in capsys.readouterr().err
