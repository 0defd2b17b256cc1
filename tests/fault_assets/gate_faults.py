"""Test-only pytest plugin: breaks what the CI gate guards, to show that the gate then fails.

Loaded by ``tests/test_ci_gate.py`` into the real smoke run (``-p gate_faults``); it changes
nothing unless ``PEFTCORE_GATE_FAULT`` says which fault to inject:

- ``untrained``: every model is scored with its adapter disabled, as if training did nothing;
- ``one-answer``: the choice scorer predicts the first choice, whatever the model says.
"""

from __future__ import annotations

import os
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    fault = os.environ.get("PEFTCORE_GATE_FAULT", "")
    if fault == "untrained":
        import peftcore.score as package
        from peftcore.score import run

        real = run.score

        def score(model: Any, *args: Any, **kwargs: Any) -> Any:
            if not hasattr(model, "disable_adapter"):  # the untrained base, or full fine-tuning
                return real(model, *args, **kwargs)
            with model.disable_adapter():
                return real(model, *args, **kwargs)

        package.score = score  # what the pipeline calls (peftcore.pipeline.scoring.score_case)
    elif fault == "one-answer":
        from peftcore.score import choices

        choices._argmax = lambda values: 0
    elif fault:
        raise pytest.UsageError(f"PEFTCORE_GATE_FAULT: unknown fault {fault!r}")
