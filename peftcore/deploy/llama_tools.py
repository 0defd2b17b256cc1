"""llama.cpp's command-line tools (llama-quantize, llama-perplexity, llama-bench), built once here.

K-quant GGUF files (Q4_K_M, what practitioners ship) are made by llama.cpp's ``llama-quantize``,
not by the ``gguf`` Python package. PyPI is the only network a peftcore machine may need, and the
sdist of ``llama-cpp-python`` (pinned below) carries llama.cpp's source under
``vendor/llama.cpp``; :func:`build_tools` builds just the three tools from it with CMake (about
3.5 minutes on 2 cores; ``make llama-cpp`` or ``peftcore llama-cpp build``). The build is
opt-in: nothing else builds it, and a profile that needs it fails at collection until it is
built (:func:`require_tools`).

The tools live in ``$PEFTCORE_CACHE/llama-cpp/<package>-<version>-<cpu key>/`` with a
``build.json`` saying how they were made. ``GGML_NATIVE=ON`` compiles for the instruction set
of the CPU it builds on, so the folder is keyed by that CPU (its model name and flags): a cache
shared with another machine never runs a binary built for a CPU it is not. The libraries are
linked statically, so the folder holds the binaries alone and can be moved.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.device import cpu_kind
from peftcore.errors import AssetError, PeftcoreError, SpecError
from peftcore.storage import atomic_file, atomic_folder, atomic_write_json, cache_root

SOURCE_PACKAGE = "llama-cpp-python"
SOURCE_VERSION = "0.3.36"
SOURCE_SUBDIR = "vendor/llama.cpp"  # where the sdist keeps llama.cpp's source
TOOLS = ("llama-quantize", "llama-perplexity", "llama-bench")
BUILD_COMMAND = "make llama-cpp"  # or: python -m peftcore.cli llama-cpp build
# Release build of the tools alone: no network client, tests, examples or server; no OpenMP
# (ggml's own thread pool); static libraries, so the binaries run from wherever they are copied.
CMAKE_FLAGS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_SERVER=OFF",
    "-DGGML_OPENMP=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)
LOG_TAIL_LINES = 20


class ToolBuildError(PeftcoreError):
    """Building llama.cpp's tools failed; the message has the log's last lines and its path."""


@dataclass(frozen=True)
class LlamaTools:
    """The built tools' paths."""

    folder: Path
    quantize: Path
    perplexity: Path
    bench: Path


def cpu_key(cpuinfo: str | None = None) -> str:
    """A short hash of the CPU's model name and flags (``/proc/cpuinfo``; ``cpuinfo`` for tests).

    Where there is no /proc/cpuinfo (macOS), the machine and processor names from ``platform``.
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key in ("model name", "flags", "Features", "CPU implementer", "CPU part"):
            fields.setdefault(key, value.strip())
    if "flags" in fields:
        fields["flags"] = " ".join(sorted(fields["flags"].split()))
    if not fields:
        fields = {"machine": platform.machine(), "processor": platform.processor()}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]


def tools_folder() -> Path:
    """Where the tools of the pinned source, built for this CPU, live (built or not)."""
    return cache_root() / "llama-cpp" / f"{SOURCE_PACKAGE}-{SOURCE_VERSION}-{cpu_key()}"


def find_tools() -> LlamaTools | None:
    """The built tools, or None when any of them (or build.json) is missing."""
    folder = tools_folder()
    paths = [folder / name for name in TOOLS]
    if not (folder / "build.json").is_file() or not all(os.access(p, os.X_OK) for p in paths):
        return None
    return LlamaTools(folder, *paths)


def missing_reason() -> str | None:
    """One line saying what is missing and how to build it, or None when the tools are built."""
    if find_tools() is not None:
        return None
    return (
        f"llama.cpp's tools ({', '.join(TOOLS)}) are not built for this CPU in {tools_folder()}; "
        f"`{BUILD_COMMAND}` builds them from {SOURCE_PACKAGE}=={SOURCE_VERSION}'s source (PyPI)"
    )


def require_tools(variants: Sequence[tuple[int, str]], file: str | Path | None, key: str) -> None:
    """SpecError (one line: the file, the key, the variant, the command) when variants made by
    llama-quantize are asked for and the tools are not built. ``variants``: (index, name) pairs
    of the ones that need the tools. Run at collection, so no case trains before it fails."""
    if not variants or find_tools() is not None:
        return
    index, name = variants[0]
    raise SpecError(
        file,
        f"{key}[{index}]",
        f"{name!r} is made by llama.cpp's llama-quantize, which is not built for this CPU; "
        f"run `{BUILD_COMMAND}` first (it builds into {tools_folder()})",
    )


def tools_provenance() -> dict[str, Any] | None:
    """The built tools' build.json (what a record cites as the tool), or None when not built."""
    tools = find_tools()
    if tools is None:
        return None
    provenance: dict[str, Any] = json.loads((tools.folder / "build.json").read_text(encoding="utf-8"))
    return provenance


def missing_toolchain() -> str | None:
    """One line naming what to install when CMake, Ninja or Make, or a C++ compiler is not on
    PATH; None when all are there."""
    lacking = []
    if shutil.which("cmake") is None:
        lacking.append(("cmake", "cmake"))
    if shutil.which("ninja") is None and shutil.which("make") is None:
        lacking.append(("ninja (or make)", "ninja-build"))
    if _compiler() is None:
        lacking.append(("a C++ compiler (c++, g++ or clang++; or $CXX)", "g++"))
    if not lacking:
        return None
    return (
        f"building llama.cpp's tools needs {', '.join(what for what, _ in lacking)} on PATH; "
        f"install them, e.g. `apt-get install {' '.join(package for _, package in lacking)}`"
    )


def _compiler() -> str | None:
    candidates = [os.environ["CXX"]] if os.environ.get("CXX") else ["c++", "g++", "clang++"]
    for name in candidates:
        found = shutil.which(name)
        if found:
            return found
    return None


def build_tools(jobs: int | None = None, say: Callable[[str], None] = print) -> LlamaTools:
    """Build the tools into :func:`tools_folder` (once: an existing build is returned as it is).

    Downloads the pinned sdist from PyPI with pip into a temp folder, configures and builds the
    three targets, copies the binaries into a temp folder renamed into place, and writes
    build.json. A file lock keeps two processes from building at once (the second finds the
    first's build). AssetError when the toolchain is missing; ToolBuildError when a step fails,
    with the last lines of the log and its path.
    """
    missing = missing_toolchain()
    if missing:
        raise AssetError(missing)
    folder = tools_folder()
    log_path = folder.parent / f"{folder.name}.build.log"
    with _lock(folder.parent / f".{folder.name}.lock"):
        found = find_tools()
        if found is not None:
            return found
        say(f"building {', '.join(TOOLS)} from {SOURCE_PACKAGE}=={SOURCE_VERSION}; log: {log_path}")
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="peftcore-llama-cpp-") as scratch, log_path.open("w") as log:
            work = Path(scratch)
            source = _fetch_source(work, log, log_path)
            generator = ["-G", "Ninja"] if shutil.which("ninja") else ["-G", "Unix Makefiles"]
            build = work / "build"
            _run(["cmake", "-S", str(source), "-B", str(build), *generator, *CMAKE_FLAGS], log, log_path)
            parallel = str(jobs or parallel_level())
            _run(["cmake", "--build", str(build), "-j", parallel, "--target", *TOOLS], log, log_path)
            seconds = time.perf_counter() - start
            info = _build_info(source, generator[1], seconds)
            with atomic_folder(folder) as tmp:
                for name in TOOLS:
                    shutil.copy2(_binary(build, name), tmp / name)
                _check_linked(tmp, log, log_path)
                atomic_write_json(tmp / "build.json", info)
                shutil.copy2(log_path, tmp / "build.log")
        say(f"built in {seconds:.0f} s: {folder}")
    tools = find_tools()
    assert tools is not None, folder
    return tools


def parallel_level() -> int:
    """Compile jobs: ``$CMAKE_BUILD_PARALLEL_LEVEL`` when set (as CMake reads it), else the CPUs."""
    level = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", "")
    return int(level) if level.isdigit() and int(level) > 0 else os.cpu_count() or 1


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run(command: list[str], log: Any, log_path: Path, cwd: Path | None = None) -> None:
    """Run ``command`` with its output appended to the log; ToolBuildError when it fails."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    try:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, check=False)
    except OSError as err:
        raise ToolBuildError(f"could not run {command[0]}: {err}; full log: {log_path}") from None
    if done.returncode != 0:
        log.flush()
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-LOG_TAIL_LINES:]
        raise ToolBuildError(
            f"`{' '.join(command[:3])} ...` failed (exit {done.returncode}); last lines of the log:\n"
            + "\n".join(tail)
            + f"\nfull log: {log_path}"
        )


def _fetch_source(work: Path, log: Any, log_path: Path) -> Path:
    """The pinned sdist downloaded by pip from PyPI and unpacked; the llama.cpp source folder."""
    pin = f"{SOURCE_PACKAGE}=={SOURCE_VERSION}"
    download = work / "sdist"
    pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", pin]
    _run([*pip, "-d", str(download)], log, log_path)
    archives = sorted(download.glob("*.tar.gz"))
    if not archives:
        raise ToolBuildError(f"pip download of {pin} left no .tar.gz in {download}; full log: {log_path}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(work / "src", filter="data")
    found = sorted((work / "src").glob(f"*/{SOURCE_SUBDIR}/CMakeLists.txt"))
    if not found:
        raise ToolBuildError(f"{archives[0].name} has no {SOURCE_SUBDIR}/CMakeLists.txt; log: {log_path}")
    return found[0].parent


def _binary(build: Path, name: str) -> Path:
    for candidate in (build / "bin" / name, build / name):
        if candidate.is_file():
            return candidate
    raise ToolBuildError(f"the build finished without {name} in {build / 'bin'}")


def _check_linked(folder: Path, log: Any, log_path: Path) -> None:
    """ToolBuildError when a copied binary needs a shared library the system cannot find (a
    library of the build folder, which is about to be removed). Skipped where ldd is missing."""
    if shutil.which("ldd") is None:
        return
    for name in TOOLS:
        done = subprocess.run(["ldd", str(folder / name)], capture_output=True, text=True, check=False)
        log.write(f"$ ldd {name}\n{done.stdout}{done.stderr}")
        unresolved = [line.split()[0] for line in done.stdout.splitlines() if "not found" in line]
        if unresolved:
            raise ToolBuildError(
                f"{name} needs shared libraries the build folder held: {', '.join(unresolved)}; "
                f"full log: {log_path}"
            )


def _build_info(source: Path, generator: str, seconds: float) -> dict[str, Any]:
    """What build.json records: the source, llama.cpp's version, the toolchain, the flags, the CPU."""
    return {
        "source": {"package": SOURCE_PACKAGE, "version": SOURCE_VERSION, "subdir": SOURCE_SUBDIR},
        "llama_cpp": _source_version(source),
        "cmake": _first_line(["cmake", "--version"]),
        "generator": generator,
        "compiler": _first_line([_compiler() or "c++", "--version"]),
        "cmake_flags": list(CMAKE_FLAGS),
        "targets": list(TOOLS),
        "cpu": {"key": cpu_key(), "model": cpu_kind()[0]},
        "build_seconds": round(seconds, 1),
        "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


PARTS = ("MAJOR", "MINOR", "PATCH")


def _source_version(source: Path) -> dict[str, str | None]:
    """llama.cpp's commit and its and ggml's version numbers (from their CMakeLists.txt). The
    sdist keeps the submodule's shallow git folder, whose HEAD is the commit the tools embed
    (``llama-bench --version``); None where it is not there."""
    found: dict[str, str | None] = {"commit": _submodule_commit(source)}
    for name, path, prefix in (
        ("llama_cpp_version", source / "CMakeLists.txt", "LLAMA"),
        ("ggml_version", source / "ggml" / "CMakeLists.txt", "GGML"),
    ):
        text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
        parts = [re.search(rf"set\({prefix}_VERSION_{part}\s+(\d+)\)", text) for part in PARTS]
        found[name] = ".".join(m.group(1) for m in parts if m) if all(parts) else None
    return found


def _submodule_commit(source: Path) -> str | None:
    """The commit in HEAD of ``source``'s git folder (``.git`` is a folder, or a file saying
    ``gitdir: <path>`` for a submodule), read without running git."""
    dot_git = source / ".git"
    with contextlib.suppress(OSError):
        if dot_git.is_file():
            pointer = dot_git.read_text(encoding="utf-8").strip()
            dot_git = (source / pointer.removeprefix("gitdir:").strip()).resolve()
        head = (dot_git / "HEAD").read_text(encoding="utf-8").strip()
        if re.fullmatch(r"[0-9a-f]{40}", head):
            return head
    return None


def _first_line(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (done.stdout or done.stderr).strip().splitlines()
    return lines[0] if lines else None


def quantize_types(help_text: str) -> dict[str, str]:
    """The types ``llama-quantize --help`` lists after "allowed quantization types", each with
    its description (``"  15  or  Q4_K_M  :  4.58G, +0.1754 ppl @ Llama-3-8B"``)."""
    _, _, table = help_text.partition("allowed quantization types")
    found = re.findall(r"^\s+(?:\d+\s+or\s+)?([A-Z][A-Z0-9_]+)\s*:\s*(.*)$", table, flags=re.MULTILINE)
    return {name: description.strip() for name, description in found}


def fallback_tensors(output: str) -> int:
    """How many tensors llama-quantize wrote in a fallback type (rows not a multiple of the
    K-quant super-block of 256), from its output ("14 of 20 tensor(s) required fallback")."""
    found = re.search(r"(\d+) of \d+ tensor\(s\) required fallback", output)
    return int(found.group(1)) if found else 0


def quantize_help(tools: LlamaTools) -> str:
    """What ``llama-quantize --help`` prints (it exits non-zero after printing its usage)."""
    done = subprocess.run([str(tools.quantize), "--help"], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def quantize(tools: LlamaTools, source: Path, out: Path, gguf_type: str, threads: int) -> str:
    """``llama-quantize source out TYPE threads``: ``out`` written atomically; the tool's output.

    RuntimeError with its last lines when it fails.
    """
    with atomic_file(out) as tmp:
        command = [str(tools.quantize), str(source), str(tmp), gguf_type, str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        output = done.stdout + done.stderr
        if done.returncode != 0:
            tail = " | ".join(output.strip().splitlines()[-5:])
            raise RuntimeError(f"llama-quantize {gguf_type} failed (exit {done.returncode}): {tail}")
    return output
