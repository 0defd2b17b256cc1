"""Shared by the library's tests: ``pytester`` (the plugin is tested by running pytest inside
pytest) and a writable copy of the shipped spec directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

# precision: auto takes these figures instead of measuring this machine (peftcore.device): no
# test depends on the shared machine's speed, and every case under auto trains in fp32. Tests of
# the measurement itself unset it. (Set here, so pytester's and torchrun's children inherit it.)
os.environ.setdefault("PEFTCORE_PRECISION_FLOPS", "fp32=1e11")

SHIPPED_SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"


@pytest.fixture
def shipped_specs() -> Path:
    """The repository's own spec directory (read it, never write to it)."""
    return SHIPPED_SPECS


@pytest.fixture
def specs(tmp_path: Path) -> Path:
    """A copy of the shipped spec directory that a test may break."""
    return Path(shutil.copytree(SHIPPED_SPECS, tmp_path / "specs"))
