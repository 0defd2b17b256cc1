"""Shared by the library's tests: ``pytester`` (the plugin is tested by running pytest inside
pytest), a writable copy of the shipped spec directory, and the tiny Llama as a model folder and
as a pytester project's model ``tiny``."""

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


@pytest.fixture(scope="session")
def tiny_model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama (tests/tiny_llama.py) and SmolLM2's tokenizer, saved as a model folder:
    a ``kind: local`` model for pytest sessions whose point is not the real weights."""
    from tiny_llama import tiny_base

    from peftcore.spec import SpecStore

    base = tiny_base(SpecStore(SHIPPED_SPECS).get("models", "smollm2-135m"))
    folder = tmp_path_factory.mktemp("tiny-llama")
    base.model.save_pretrained(folder)
    base.tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def tiny_project(pytester: pytest.Pytester, shipped_specs: Path, tiny_model_folder: Path) -> pytest.Pytester:
    """A pytester project for pytest sessions of the tiny Llama: a copy of the shipped specs with
    the model ``tiny`` added, and the plugin's ini (tests/test_plugin.py). A test writes its
    profile into ``specs/profiles/`` and reads the run's records with ``report_fixtures.read_cases``."""
    from test_plugin import INI
    from tiny_llama import add_tiny_model

    shutil.copytree(shipped_specs, pytester.path / "specs")
    add_tiny_model(pytester.path / "specs", tiny_model_folder)
    pytester.makefile(".ini", pytest=INI)
    return pytester
