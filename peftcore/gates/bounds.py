"""Absolute gates: a record's metrics and cost figures against a spec's ``expect:`` bounds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.spec.gates import Expect, matches
from peftcore.vocab.quantities import format_value


@dataclass(frozen=True)
class GateFailure:
    """One broken gate, to be reported on ``case_id``; ``message`` is the whole story."""

    case_id: str
    message: str
    quantity: str
    value: float | None
    bound: float | None
    source_file: str
    baseline_id: str | None = None  # the other case of a relative rule

    def __str__(self) -> str:
        return self.message


def failures_for(failures: Iterable[GateFailure], case_id: str) -> list[GateFailure]:
    """The failures in which ``case_id`` takes part (as the checked case or as its baseline)."""
    return [f for f in failures if case_id in (f.case_id, f.baseline_id)]


def check_expect(
    record: Mapping[str, Any], expect: Expect, source_file: str | Path | None
) -> list[GateFailure]:
    """Failures of ``record`` against the bounds of ``expect`` (declared in ``source_file``).

    Only finished records are checked (a failed case has failed already). A metric the case's
    task does not score is not applicable (a profile's ``expect`` covers tasks with different
    metrics; ``primary`` bounds each task's first metric).
    """
    bounds = expect.bounds
    if record.get("status") != "finished":
        return []
    case_id = str(record["case_id"])
    where = f"expect in {source_file}" if source_file else "expect"
    failures = []
    for bound in bounds:
        if bound.methods and not matches(str(record["method"]), bound.methods):
            continue
        quantity = bound.quantity.resolve(record)
        value = quantity.value(record)
        if value is None:
            if not quantity.applies_to(record):
                continue  # e.g. f1 on a multiple-choice task, training memory of the untrained base
            failures.append(
                GateFailure(
                    case_id,
                    f"{case_id}: {quantity.words} is not in the record, so {bound.written} "
                    f"cannot be checked ({where})",
                    quantity.label,
                    None,
                    bound.min if bound.min is not None else bound.max,
                    str(source_file),
                )
            )
            continue
        for side, limit in (("min", bound.min), ("max", bound.max)):
            if limit is None:
                continue
            if math.isnan(value) or (value < limit if side == "min" else value > limit):
                relation = (
                    "is NaN, so not within"
                    if math.isnan(value)
                    else f"is {'below' if side == 'min' else 'above'}"
                )
                failures.append(
                    GateFailure(
                        case_id,
                        f"{case_id}: {quantity.words} = {format_value(quantity, value)} {relation} "
                        f"{side} {format_value(quantity, limit)} ({where})",
                        quantity.label,
                        value,
                        limit,
                        str(source_file),
                    )
                )
    return failures
