"""Relative gates: a profile's ``compare:`` rules between the cases of one session."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError
from peftcore.gates.bounds import GateFailure
from peftcore.results.compare import CompareError, compare
from peftcore.spec.gates import Compare, Rule, matches
from peftcore.vocab.quantities import RELATIVE_SLACK, Quantity, format_value, higher_is_better
from peftcore.vocab.record import case_key


def check_relative(
    records: Iterable[Mapping[str, Any]], rules: Compare, source_file: str | Path | None
) -> list[GateFailure]:
    """Failures of the ``compare:`` rules among ``records`` (one session's cases).

    A rule is evaluated for every pair of finished records with the same model, task and seed
    whose methods are the rule's case and baseline; pairs with a missing or unfinished member
    are skipped. Each failure is reported on the checked case and names the baseline case.
    """
    parsed = rules.rules
    groups: dict[tuple[str, str, int], dict[str, Mapping[str, Any]]] = {}
    for record in records:
        if record.get("status") == "finished":
            method, model, task, seed = case_key(record)
            groups.setdefault((model, task, seed), {})[method] = record
    failures = []
    for rule in parsed:
        for (model, task, _seed), by_method in groups.items():
            if (rule.tasks and not matches(task, rule.tasks)) or (
                rule.models and not matches(model, rule.models)
            ):
                continue
            reference = by_method.get(rule.baseline)
            if reference is None:
                continue
            for method, record in sorted(by_method.items()):
                if method != rule.baseline and matches(method, rule.cases):
                    failure = _check_pair(rule, record, reference, source_file)
                    if failure:
                        failures.append(failure)
    return failures


def _check_pair(
    rule: Rule, record: Mapping[str, Any], reference: Mapping[str, Any], source_file: str | Path | None
) -> GateFailure | None:
    quantity = rule.quantity.resolve(record)
    if not (quantity.applies_to(record) and quantity.applies_to(reference)):
        return None  # e.g. f1 on a multiple-choice task, training memory of the untrained base
    case_id, base_id = str(record["case_id"]), str(reference["case_id"])
    value, base = quantity.value(record), quantity.value(reference)
    where = f"compare rule {rule.index + 1}" + (f" in {source_file}" if source_file else "")
    why = f"; {rule.why}" if rule.why else ""
    method_base = str(reference["method"])
    if value is None or base is None:
        missing = case_id if value is None else base_id
        return GateFailure(
            case_id,
            f"{case_id}: {quantity.words} is not in the record of {missing}, so '{rule.describe()}' "
            f"cannot be checked ({where})",
            quantity.label,
            value,
            base,
            str(source_file),
            base_id,
        )
    shown, shown_base = format_value(quantity, value), format_value(quantity, base)
    ok: bool
    if rule.confidence is not None:
        ok, detail = _check_with_confidence(rule, quantity, record, reference, source_file)
    elif rule.kind == "beat":
        direction = _direction(rule, quantity, source_file, instead="must: below or above")
        ok = not math.isnan(value) and (value > base if direction else value < base)
        detail = (
            f"does not beat {method_base}'s {shown_base} ({'higher' if direction else 'lower'} is better)"
        )
    elif rule.kind in ("below", "above"):
        ok = value < base if rule.kind == "below" else value > base
        detail = f"is not {rule.kind} {method_base}'s {shown_base}"
    elif rule.kind == "max_ratio":
        assert rule.ratio is not None
        limit = rule.ratio * base
        ok = value <= limit * (1 + RELATIVE_SLACK)
        times = f"{value / base:.3g} x" if base else "above"
        detail = f"is {times} {method_base}'s {shown_base}; at most {rule.ratio:g} x allowed"
    else:
        assert rule.tolerance is not None
        direction = _direction(rule, quantity, source_file, instead="max_ratio or must:")
        worse = (base - value) if direction else (value - base)
        allowed = rule.tolerance.allowed(base)
        ok = not math.isnan(value) and worse <= rule.tolerance.limit(base)
        detail = (
            f"is {format_value(quantity, worse)} worse than {method_base}'s {shown_base}; "
            f"max_drop {rule.tolerance} allows {format_value(quantity, allowed)}"
        )
    if ok:
        return None
    return GateFailure(
        case_id,
        f"{case_id}: {quantity.words} {shown} {detail} ({where}{why})",
        quantity.label,
        value,
        base,
        str(source_file),
        base_id,
    )


def _check_with_confidence(
    rule: Rule,
    quantity: Quantity,
    record: Mapping[str, Any],
    reference: Mapping[str, Any],
    source_file: str | Path | None,
) -> tuple[bool, str]:
    """``must: beat`` holds when the paired interval of the difference lies wholly on the better
    side of 0; ``max_drop`` when the interval's worse bound is within the drop allowed. A case
    without per-example scores, or scored on other examples than its baseline, fails the rule
    with the reason (never a silently unpaired test)."""
    assert rule.confidence is not None
    direction = _direction(rule, quantity, source_file, instead="a rule without confidence:")
    method_base = str(reference["method"])
    try:
        result = compare(record, reference, quantity.name, split=quantity.block, confidence=rule.confidence)
    except CompareError as err:
        return False, f"cannot be compared with {method_base} at {rule.confidence:.0%} confidence: {err}"
    # Oriented so that positive is better.
    low, high = (result.low, result.high) if direction else (-result.high, -result.low)
    gain = result.difference if direction else -result.difference
    interval = (
        f"{'+' if gain >= 0 else ''}{format_value(quantity, gain)}, {rule.confidence:.0%} interval "
        f"[{format_value(quantity, low)}, {format_value(quantity, high)}] over {result.n} paired examples"
    )
    if rule.kind == "beat":
        return low > 0, f"does not beat {method_base} beyond noise (better by {interval})"
    assert rule.tolerance is not None
    allowed = rule.tolerance.allowed(quantity.value(reference) or 0.0)
    return -low <= rule.tolerance.limit(quantity.value(reference) or 0.0), (
        f"may be worse than {method_base} by more than max_drop {rule.tolerance} "
        f"({format_value(quantity, allowed)}): better by {interval}"
    )


def _direction(rule: Rule, quantity: Quantity, source_file: str | Path | None, instead: str) -> bool:
    """Whether higher is better for a rule that needs to know; SpecError when nobody declared it."""
    direction = higher_is_better(quantity.name)
    if direction is None:
        raise SpecError(
            source_file,
            f"compare[{rule.index}]",
            f"{quantity.name!r} has no declared direction in peftcore.vocab.metrics; use {instead}",
        )
    return direction
