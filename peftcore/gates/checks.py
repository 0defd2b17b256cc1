"""Quality gates over case records: absolute bounds (``expect:``) and rules between cases (``compare:``).

Pure functions over records (see :mod:`peftcore.results.store`); nothing here imports pytest, so the
plugin, the report and a notebook can all ask the same questions. Quantity names (``f1``,
``seen.f1``, ``primary``, ``peak_memory_bytes``, ...) are those of :mod:`peftcore.results.quantities`;
regressions against a stored baseline are :mod:`peftcore.gates.baseline`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import PeftcoreError, SpecError
from peftcore.results.quantities import (
    RELATIVE_SLACK,
    Quantity,
    Tolerance,
    format_value,
    higher_is_better,
    parse_quantity,
    parse_tolerance,
    reported_metrics,
)
from peftcore.results.record import case_key, task_metrics
from peftcore.spec.schema import suggest


class GateError(PeftcoreError, ValueError):
    """A gate option or baseline cannot be used (bad tolerance text, wrong baseline file)."""


# --------------------------------------------------------------------------- gate failures


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


# --------------------------------------------------------------------------- absolute gates

_UNITS = {"b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def _number(value: Any, *, bytes_ok: bool) -> float:
    """A bound: a YAML number, a number PyYAML left as text (``2.0e9``), or ``"2 GiB"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = re.fullmatch(r"\s*([-+]?[\d.]+(?:[eE][-+]?\d+)?)\s*([A-Za-z]*)\s*", value)
        if match:
            unit = match.group(2).lower()
            if not unit:
                return float(match.group(1))
            if bytes_ok and unit in _UNITS:
                return float(match.group(1)) * _UNITS[unit]
    units = ", e.g. 2 GiB" if bytes_ok else ""
    raise ValueError(f"expected a number{units}, got {value!r}")


@dataclass(frozen=True)
class Bound:
    quantity: Quantity
    written: str
    min: float | None
    max: float | None
    methods: tuple[str, ...]  # method names or glob patterns; empty = every method


def parse_expect(
    expect: Mapping[str, Any], source_file: str | Path | None, known_metrics: Collection[str] = ()
) -> list[Bound]:
    """Validate an ``expect:`` mapping; SpecError names the file and key at fault.

    ``expect: {accuracy: {min: 0.40}, peak_memory_bytes: {max: 2 GiB, methods: [qlora]}}``
    """
    if not isinstance(expect, Mapping):
        raise SpecError(source_file, "expect", "expected a mapping of metric -> {min, max}")
    bounds = []
    for name, spec in expect.items():
        key = f"expect.{name}"
        try:
            quantity = parse_quantity(str(name), known_metrics)
        except ValueError as err:
            raise SpecError(source_file, key, str(err)) from None
        if not isinstance(spec, Mapping) or not spec:
            raise SpecError(source_file, key, "expected {min: <number>} and/or {max: <number>}")
        unknown = set(spec) - {"min", "max", "methods"}
        if unknown:
            raise SpecError(
                source_file, key, f"unknown key {sorted(unknown)[0]!r}; expected min, max, methods"
            )
        if "min" not in spec and "max" not in spec:
            raise SpecError(source_file, key, "expected min and/or max")
        values: dict[str, float | None] = {}
        for side in ("min", "max"):
            try:
                values[side] = (
                    _number(spec[side], bytes_ok=quantity.name.endswith("_bytes")) if side in spec else None
                )
            except ValueError as err:
                raise SpecError(source_file, f"{key}.{side}", str(err)) from None
        low, high = values["min"], values["max"]
        if low is not None and high is not None and low > high:
            raise SpecError(source_file, key, f"min {low:g} is above max {high:g}")
        methods = _patterns(spec.get("methods", ()), source_file, f"{key}.methods")
        bounds.append(Bound(quantity, str(name), low, high, methods))
    return bounds


def validate_expect(
    expect: Mapping[str, Any], source_file: str | Path | None, task_metrics: Collection[str] = ()
) -> None:
    """Check an ``expect:`` block when specs load, before any training (raises SpecError)."""
    parse_expect(expect, source_file, task_metrics)


def check_expect(
    record: Mapping[str, Any], expect: Mapping[str, Any], source_file: str | Path | None
) -> list[GateFailure]:
    """Failures of ``record`` against the bounds in ``expect`` (from ``source_file``).

    Only finished records are checked (a failed case has failed already). A metric the case's
    task does not score is not applicable (a profile's ``expect`` covers tasks with different
    metrics; ``primary`` bounds each task's first metric). A name that is neither a known metric
    nor a cost figure raises SpecError.
    """
    known = {*task_metrics(record), *reported_metrics(record)}
    bounds = parse_expect(expect, source_file, known)
    if record.get("status") != "finished":
        return []
    case_id = str(record["case_id"])
    where = f"expect in {source_file}" if source_file else "expect"
    failures = []
    for bound in bounds:
        if bound.methods and not _matches(str(record["method"]), bound.methods):
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


# --------------------------------------------------------------------------- relative gates

RuleKind = Literal["beat", "below", "above", "max_drop", "max_ratio"]
_RULE_KEYS = ("metric", "figure", "case", "baseline", "must", "max_drop", "max_ratio", "task", "model", "why")
_MUSTS = ("beat", "below", "above")


@dataclass(frozen=True)
class Rule:
    """One entry of a profile's ``compare:`` list, validated."""

    index: int
    quantity: Quantity
    cases: tuple[str, ...]  # method names or glob patterns
    baseline: str
    kind: RuleKind
    tolerance: Tolerance | None = None  # max_drop
    ratio: float | None = None  # max_ratio
    tasks: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    why: str = ""

    def describe(self) -> str:
        condition = {
            "beat": "must beat",
            "below": "must be below",
            "above": "must be above",
            "max_drop": f"may be worse by at most {self.tolerance} than",
            "max_ratio": f"must be at most {self.ratio:g} x",
        }[self.kind]
        return f"{self.quantity.label} of {'/'.join(self.cases)} {condition} {self.baseline}"


def parse_rules(rules: Any, source_file: str | Path | None) -> list[Rule]:
    """Validate a ``compare:`` list; a malformed rule raises a one-line SpecError.

    Each rule names one quantity (``metric:`` or ``figure:``), the methods it checks (``case:``,
    a name, a glob such as ``"*"`` or a list), the method they are held against (``baseline:``)
    and one condition: ``must: beat | below | above``, ``max_drop: 0.02 | 2%`` or
    ``max_ratio: 0.8``. Optional: ``task:``, ``model:`` (names or lists) and ``why:`` (text
    added to the failure message).
    """
    if rules is None:
        return []
    if not isinstance(rules, (list, tuple)):
        raise SpecError(
            source_file, "compare", "expected a list of rules like {metric: f1, case: qlora, ...}"
        )
    return [_parse_rule(i, rule, source_file) for i, rule in enumerate(rules)]


def _parse_rule(index: int, rule: Any, source_file: str | Path | None) -> Rule:
    key = f"compare[{index}]"
    if not isinstance(rule, Mapping):
        raise SpecError(
            source_file, key, "expected a mapping like {metric: f1, case: qlora, baseline: lora, ...}"
        )
    unknown = [k for k in rule if k not in _RULE_KEYS]
    if unknown:
        raise SpecError(
            source_file, f"{key}.{unknown[0]}", "unknown key; " + suggest(str(unknown[0]), _RULE_KEYS)
        )
    named = [k for k in ("metric", "figure") if k in rule]
    if len(named) != 1:
        raise SpecError(source_file, key, "name exactly one of metric: or figure:")
    kind_key = named[0]
    try:
        quantity = parse_quantity(str(rule[kind_key]), lenient=True)
    except ValueError as err:
        raise SpecError(source_file, f"{key}.{kind_key}", str(err)) from None
    if kind_key == "metric" and not quantity.is_metric:
        raise SpecError(source_file, f"{key}.metric", f"{rule['metric']!r} is a cost figure; write figure:")
    if kind_key == "figure" and quantity.is_metric:
        raise SpecError(
            source_file, f"{key}.figure", f"{rule['figure']!r} is not a cost figure; write metric:"
        )
    for required in ("case", "baseline"):
        if required not in rule:
            raise SpecError(source_file, key, f"missing {required}:")
    cases = _patterns(rule["case"], source_file, f"{key}.case")
    baseline = rule["baseline"]
    if not isinstance(baseline, str) or not baseline or any(c in baseline for c in "*?["):
        raise SpecError(source_file, f"{key}.baseline", "expected one method name")
    conditions = [k for k in ("must", "max_drop", "max_ratio") if k in rule]
    if len(conditions) != 1:
        raise SpecError(
            source_file, key, "give exactly one of must: (beat, below, above), max_drop:, max_ratio:"
        )
    tolerance, ratio = None, None
    if "must" in rule:
        if rule["must"] not in _MUSTS:
            raise SpecError(
                source_file, f"{key}.must", f"expected one of {', '.join(_MUSTS)}, got {rule['must']!r}"
            )
        kind: RuleKind = rule["must"]
    elif "max_drop" in rule:
        kind = "max_drop"
        try:
            tolerance = parse_tolerance(rule["max_drop"])
        except ValueError as err:
            raise SpecError(source_file, f"{key}.max_drop", str(err)) from None
    else:
        kind = "max_ratio"
        try:
            ratio = _number(rule["max_ratio"], bytes_ok=False)
        except ValueError as err:
            raise SpecError(source_file, f"{key}.max_ratio", str(err)) from None
        if ratio <= 0:
            raise SpecError(source_file, f"{key}.max_ratio", f"expected a positive number, got {ratio:g}")
    why = rule.get("why", "")
    if not isinstance(why, str):
        raise SpecError(source_file, f"{key}.why", "expected text")
    return Rule(
        index,
        quantity,
        cases,
        baseline,
        kind,
        tolerance,
        ratio,
        _patterns(rule.get("task", ()), source_file, f"{key}.task"),
        _patterns(rule.get("model", ()), source_file, f"{key}.model"),
        why,
    )


def _patterns(value: Any, source_file: str | Path | None, key: str) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise SpecError(source_file, key, "expected a name, a glob like 'lora*', or a list of names")


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def check_relative(
    records: Iterable[Mapping[str, Any]], rules: Any, source_file: str | Path | None
) -> list[GateFailure]:
    """Failures of the ``compare:`` rules among ``records`` (one session's cases).

    A rule is evaluated for every pair of finished records with the same model, task and seed
    whose methods are the rule's case and baseline; pairs with a missing or unfinished member
    are skipped. Each failure is reported on the checked case and names the baseline case.
    """
    parsed = parse_rules(rules, source_file)
    groups: dict[tuple[str, str, int], dict[str, Mapping[str, Any]]] = {}
    for record in records:
        if record.get("status") == "finished":
            method, model, task, seed = case_key(record)
            groups.setdefault((model, task, seed), {})[method] = record
    failures = []
    for rule in parsed:
        for (model, task, _seed), by_method in groups.items():
            if (rule.tasks and not _matches(task, rule.tasks)) or (
                rule.models and not _matches(model, rule.models)
            ):
                continue
            reference = by_method.get(rule.baseline)
            if reference is None:
                continue
            for method, record in sorted(by_method.items()):
                if method != rule.baseline and _matches(method, rule.cases):
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
    if rule.kind == "beat":
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


def _direction(rule: Rule, quantity: Quantity, source_file: str | Path | None, instead: str) -> bool:
    """Whether higher is better for a rule that needs to know; SpecError when nobody declared it."""
    direction = higher_is_better(quantity.name)
    if direction is None:
        raise SpecError(
            source_file,
            f"compare[{rule.index}]",
            f"{quantity.name!r} has no declared direction in peftcore.score.metrics; use {instead}",
        )
    return direction
