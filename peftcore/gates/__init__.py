"""Quality gates over case records: absolute bounds (``expect:``), rules between the cases of a
session (``compare:``) and regressions against a stored baseline (``--metric-compare-fail``).

Pure functions over records (:mod:`peftcore.vocab.record`); nothing here imports pytest, so the
plugin, the report and a notebook can all ask the same questions. The gates themselves are
declared in specs and parsed when they load (:mod:`peftcore.spec.gates`).
"""

from peftcore.errors import GateError
from peftcore.gates.bounds import GateFailure, check_expect, failures_for
from peftcore.gates.rules import check_relative

__all__ = ["GateError", "GateFailure", "check_expect", "check_relative", "failures_for"]
