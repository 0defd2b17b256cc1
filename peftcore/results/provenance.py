"""Where a record's numbers come from: package versions, peftcore's own code, the git state.

``package_versions()`` is read once per process. peftcore's version in it carries a fingerprint
of its own source (``0.1.0+<12 hex>``), so a change to the code a case runs through changes the
case's identity (:mod:`peftcore.pipeline.identity`) and reruns cached cases.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import subprocess
from pathlib import Path
from typing import Any

# Every package a record names, and whether a different version of it can change a number
# (then it is part of a case's identity, and a cached result of another version is not reused):
# what trains (torch, transformers, peft, bitsandbytes, accelerate: the Trainer's mixed precision
# and accumulation), what turns text into ids or weights into tensors (tokenizers, gguf,
# safetensors), what reads the data (datasets, pyarrow) and what computes a metric (evaluate,
# sentence-transformers, bert-score, rouge-score, numpy). Only the plotting and reporting
# libraries are left out.
PACKAGES: dict[str, bool] = {
    "torch": True,
    "transformers": True,
    "peft": True,
    "bitsandbytes": True,
    "accelerate": True,
    "tokenizers": True,
    "gguf": True,
    "safetensors": True,
    "datasets": True,
    "pyarrow": True,
    "evaluate": True,
    "sentence-transformers": True,
    "bert-score": True,
    "rouge-score": True,
    "numpy": True,
    "peftcore": True,
}
HASHED_PACKAGES = tuple(name for name, hashed in PACKAGES.items() if hashed)

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Parts of peftcore that only read finished records or describe specs: they cannot change a
# case's numbers. Everything else (new modules included) is fingerprinted.
OFF_THE_CASE_PATH = ("report", "plan", "cli.py", "listing.py")


def numeric_sources() -> list[Path]:
    """The peftcore source files a case's numbers can depend on, in a stable order."""
    files = []
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        relative = path.relative_to(PACKAGE_ROOT)
        if relative.parts[0] not in OFF_THE_CASE_PATH:
            files.append(path)
    return files


@functools.cache
def code_fingerprint() -> str:
    """12 hex digits over the source of every module in :func:`numeric_sources`."""
    digest = hashlib.sha256()
    for path in numeric_sources():
        digest.update(path.relative_to(PACKAGE_ROOT).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@functools.cache
def _versions() -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["peftcore"] = f"{found.get('peftcore') or '0'}+{code_fingerprint()}"
    return tuple(found.items())


def package_versions() -> dict[str, str | None]:
    """Installed version of every package in :data:`PACKAGES` (None when absent); read once."""
    return dict(_versions())


def hashed_versions(versions: dict[str, str | None]) -> dict[str, str | None]:
    """The versions that are part of a case's identity."""
    return {name: versions.get(name) for name in HASHED_PACKAGES}


def git_state(where: Path) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the checkout at ``where``."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def now() -> str:
    """The time in UTC, ISO 8601 to the second (sorts as text)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
