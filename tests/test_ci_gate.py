"""The CI gate of ``make test`` fails when what it guards breaks, and passes when nothing does.

Each run is the gate exactly as the Makefile runs it (the smoke profile against the committed
baseline and its statistical noise file; the options are read from the Makefile), on the SST-2
slice of base and LoRA, in a subprocess with a fault injected by
``tests/fault_assets/gate_faults.py``:

- none: the gate passes. That run is not repeated here: it is ``make test``'s second step, on
  every case of the profile, so a gate that fails a correct run fails ``make test``;
- training does nothing (LoRA scored with its adapter disabled): the rule "every trained
  method beats base" fails. (The baseline gate alone lets it pass: LoRA's held-out Brier score
  moves from 0.403 to the base's 0.499, within its measured noise, sd 0.066: the paired
  sampling error over 100 examples and five steps' seed-to-seed spread, docs/measurements.md.);
- a scorer that always predicts the first choice: the untrained base, which reproduces exactly,
  regresses against the baseline (that run is the base alone: LoRA would add a minute and
  nothing to what is checked).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ASSETS = Path(__file__).resolve().parent / "fault_assets"
SLICE = "sst2 and (base or lora)"  # markers: exactly these methods


pytestmark = pytest.mark.slow  # the real model, training or pytest sessions of it: not in the quick tier


def make_variable(name: str) -> str:
    """``NAME ?= value`` from the Makefile: the gate is tested as make test runs it."""
    for line in (REPO / "Makefile").read_text().splitlines():
        match = re.fullmatch(rf"{name}\s*\??=\s*(.+)", line.strip())
        if match:
            return match.group(1).strip()
    raise AssertionError(f"no {name} in the Makefile")


def gate(tmp_path: Path, fault: str, cases: str = SLICE) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(PYTHONPATH=str(ASSETS), PEFTCORE_GATE_FAULT=fault)
    command = [
        *(sys.executable, "-m", "pytest", "benchmarks", "--profile", "smoke", "-m", cases),
        *("--metric-baseline", make_variable("SMOKE_BASELINE")),
        f"--metric-compare-fail={make_variable('SMOKE_TOLERANCES')}",
        *("--results-dir", str(tmp_path / "runs"), "--run-id", fault or "correct", "--no-report"),
        *("-p", "gate_faults", "-p", "no:cacheprovider", "-q", "--tb=line", "--benchmark-disable"),
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_training_that_does_nothing_fails_the_gate(tmp_path: Path) -> None:
    done = gate(tmp_path, "untrained")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-4000:]
    assert re.search(r"lora-smollm2-135m-sst2: held-out brier_score \S+ does not beat base", done.stdout)
    assert "statistical gate:" in done.stdout  # the baseline was compared, too


def test_a_scorer_that_always_gives_one_answer_fails_the_gate(tmp_path: Path) -> None:
    done = gate(tmp_path, "one-answer", cases="sst2 and base")
    assert done.returncode == pytest.ExitCode.TESTS_FAILED, done.stdout[-4000:]
    # The exact base regressed: predicting one label everywhere sinks its macro F1 (its accuracy
    # may even rise, when that label is the majority of the examples).
    assert re.search(r"base-smollm2-135m-sst2\s+\S*macro_f1", done.stdout)
