"""The benchmark grid's one test, collected from the spec directory's ``defaults.yaml``.

The plugin parametrizes ``case`` with every case of the chosen profile (one pytest case per
method x model x task, id ``<method>-<model>-<task>``), so a project needs no test file of its
own: ``pytest benchmarks`` (or ``pytest <spec dir>``) runs the grid.
"""

from __future__ import annotations

from typing import Any


def test_case(case: Any, peftcore_runner: Any) -> None:
    """Train and score one case, write its record, check its gates (peftcore.pipeline.session)."""
    peftcore_runner.run(case)
