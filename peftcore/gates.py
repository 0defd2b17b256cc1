"""Quality gates over case records: absolute bounds, rules between cases, baseline regressions.

Pure functions over records (see :mod:`peftcore.results`); nothing here imports pytest, so the
plugin, the report and a notebook can all ask the same questions.

Names of quantities, shared by ``expect:``, ``compare:`` and ``--metric-compare-fail``::

    accuracy, f1, ...            held-out metric (metrics.held_out.<name>)
    seen.accuracy                the same metric on the seen sample (metrics.seen.<name>)
    primary, seen.primary        the task's first metric (spec.task.metrics[0])
    peak_memory_bytes, ...       a cost figure; bare names are looked up in training, then
                                 inference, then base_model (peak_memory_bytes = training's)
    inference.peak_memory_bytes  a cost figure of one block, written out

Directions (is higher better?) come from :func:`peftcore.metrics.higher_is_better`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import PeftcoreError, SpecError
from peftcore.metrics import FIGURES, METRICS, higher_is_better
from peftcore.results import RECORD_FORMAT, REQUIRED_KEYS, STATUSES, load_run
from peftcore.schema import suggest

METRIC_BLOCKS = ("held_out", "seen")
# The numeric figures each cost block of a record carries (the record format, peftcore.results).
RECORD_FIGURES: dict[str, tuple[str, ...]] = {
    "training": (
        "train_seconds",
        "tokens_per_second",
        "train_tokens",
        "steps",
        "peak_memory_bytes",
        "peak_reserved_bytes",
        "trainable_params",
        "total_params",
        "trainable_percent",
        "adapter_bytes",
        "final_loss",
    ),
    "inference": ("latency_ms_per_example", "examples_per_second", "peak_memory_bytes"),
    "base_model": ("load_seconds", "footprint_bytes"),
}
_EPS = 1e-9  # relative slack so that 0.40 - 0.38 is not "more than 0.02" in binary floating point


class GateError(PeftcoreError, ValueError):
    """A gate option or baseline cannot be used (bad tolerance text, wrong baseline file)."""


# --------------------------------------------------------------------------- quantities


@dataclass(frozen=True)
class Quantity:
    """One number of a record: a metric of a split, or a figure of a cost block."""

    block: str  # held_out | seen | training | inference | base_model
    name: str  # metric or figure name; "primary" until resolved against a record

    @property
    def is_metric(self) -> bool:
        return self.block in METRIC_BLOCKS

    @property
    def label(self) -> str:
        """How the name is written: ``f1``, ``seen.f1``, ``training.peak_memory_bytes``."""
        return self.name if self.block == "held_out" else f"{self.block}.{self.name}"

    @property
    def words(self) -> str:
        """How a message says it: ``held-out f1``, ``training peak_memory_bytes``."""
        return f"{self.block.replace('_', '-')} {self.name}"

    def resolve(self, record: Mapping[str, Any]) -> Quantity:
        if self.name != "primary":
            return self
        name = primary_metric(record)
        return Quantity(self.block, name) if name else self

    def value(self, record: Mapping[str, Any]) -> float | None:
        """The number in ``record``, or None when the record does not carry it."""
        q = self.resolve(record)
        if q.is_metric:
            source = (record.get("metrics") or {}).get(q.block) or {}
        else:
            source = record.get(q.block) or {}
        value = source.get(q.name) if isinstance(source, Mapping) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        return float(value)

    def applies_to(self, record: Mapping[str, Any]) -> bool:
        """Whether ``record`` should carry this number at all: its task scores the metric, or it
        has the cost block (the untrained ``base`` method has no ``training`` block)."""
        q = self.resolve(record)
        if q.is_metric:
            return q.name in task_metrics(record) or q.name in reported_metrics(record)
        return isinstance(record.get(q.block), Mapping)

    def higher_is_better(self, record: Mapping[str, Any] | None = None) -> bool | None:
        q = self.resolve(record) if record is not None else self
        return higher_is_better(q.name)


def parse_quantity(text: str, known_metrics: Collection[str] = (), *, lenient: bool = False) -> Quantity:
    """``"seen.f1"`` -> Quantity("seen", "f1"). ValueError says what is wrong with the name.

    A bare name that is neither a cost figure nor a metric (registered or in ``known_metrics``)
    is an error, unless ``lenient`` (then it is taken to be a metric, checked later).
    """
    if not isinstance(text, str) or not re.fullmatch(r"[A-Za-z_][\w.-]*", text):
        raise ValueError(f"{text!r} is not a metric or figure name")
    metrics = {*METRICS, *known_metrics, "primary"}
    head, _, tail = text.partition(".")
    if tail:
        if head in METRIC_BLOCKS:
            if tail in FIGURES or any(tail in names for names in RECORD_FIGURES.values()):
                raise ValueError(f"{tail!r} is a cost figure, not a metric of the {head} split")
            if tail not in metrics and not lenient:
                raise ValueError(f"unknown metric {tail!r}; " + suggest(tail, metrics))
            return Quantity(head, tail)
        if head in RECORD_FIGURES:
            if tail not in RECORD_FIGURES[head]:
                raise ValueError(f"{head} has no figure {tail!r}; " + suggest(tail, RECORD_FIGURES[head]))
            return Quantity(head, tail)
        raise ValueError(f"unknown prefix {head!r} in {text!r}; expected seen., held_out., training., ...")
    for block, names in RECORD_FIGURES.items():
        if text in names:
            return Quantity(block, text)
    if text in metrics or lenient:
        return Quantity("held_out", text)
    figures = {name for names in RECORD_FIGURES.values() for name in names}
    raise ValueError(f"unknown metric or cost figure {text!r}; " + suggest(text, metrics | figures))


def primary_metric(record: Mapping[str, Any]) -> str | None:
    """The task's first declared metric, else the first held-out metric the record carries."""
    declared = task_metrics(record)
    if declared:
        return declared[0]
    held_out = (record.get("metrics") or {}).get("held_out") or {}
    return next(iter(held_out), None)


def task_metrics(record: Mapping[str, Any]) -> tuple[str, ...]:
    task = ((record.get("spec") or {}).get("task")) or {}
    names = task.get("metrics") if isinstance(task, Mapping) else None
    return tuple(str(n) for n in names) if isinstance(names, (list, tuple)) else ()


def reported_metrics(record: Mapping[str, Any]) -> set[str]:
    metrics = record.get("metrics") or {}
    return {name for block in METRIC_BLOCKS for name in (metrics.get(block) or {})}


def case_seed(record: Mapping[str, Any]) -> int:
    """The training seed: the record's ``seed``, else the resolved spec's, else the id's suffix."""
    seed = record.get("seed")
    if seed is None:
        seed = ((record.get("spec") or {}).get("training") or {}).get("seed")
    if seed is None:
        match = re.search(r"-seed(\d+)$", str(record.get("case_id", "")))
        seed = int(match.group(1)) if match else 0
    return int(seed)


CaseKey = tuple[str, str, str, int]


def case_key(record: Mapping[str, Any]) -> CaseKey:
    """(method, model, task, seed): what matches a case across runs, seed suffix or not."""
    return (str(record["method"]), str(record["model"]), str(record["task"]), case_seed(record))


def format_value(quantity: Quantity | str, value: float | None) -> str:
    name = quantity.name if isinstance(quantity, Quantity) else quantity
    if value is None:
        return "n/a"
    if name.endswith("_bytes") and math.isfinite(value):
        return human_bytes(value)
    if name.endswith("_params") and math.isfinite(value):
        return f"{value:,.0f}"
    return f"{value:.4g}"


def human_bytes(value: float) -> str:
    """1288490188.8 -> '1.20 GiB' (binary units, three significant digits)."""
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            break
        size /= 1024
    if unit == "B":
        return f"{size:.0f} B"
    digits = 0 if abs(size) >= 100 else 1 if abs(size) >= 10 else 2
    return f"{size:.{digits}f} {unit}"


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


@dataclass(frozen=True)
class Tolerance:
    """How far a value may move: ``0.02`` (absolute) or ``2%`` (relative to the reference)."""

    value: float
    relative: bool

    def allowed(self, reference: float) -> float:
        return self.value / 100 * abs(reference) if self.relative else self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def parse_tolerance(text: Any) -> Tolerance:
    """``"2%"`` -> relative 2 %, ``0.02`` or ``"0.02"`` -> absolute; ValueError otherwise."""
    raw = str(text).strip() if isinstance(text, (str, int, float)) and not isinstance(text, bool) else None
    match = re.fullmatch(r"(\d+(?:\.\d*)?|\.\d+)(?:[eE]([-+]?\d+))?\s*(%?)", raw or "")
    if not match:
        raise ValueError(f"expected a non-negative number like 0.02 or a percentage like 2%, got {text!r}")
    number = float(match.group(1) + (f"e{match.group(2)}" if match.group(2) else ""))
    return Tolerance(number, relative=bool(match.group(3)))


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
    where = (
        f"compare rule {rule.index + 1} in {source_file}" if source_file else f"compare rule {rule.index + 1}"
    )
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
        direction = higher_is_better(quantity.name)
        if direction is None:
            raise SpecError(
                source_file,
                f"compare[{rule.index}]",
                f"{quantity.name!r} has no declared direction in peftcore.metrics; use must: below or above",
            )
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
        ok = value <= limit * (1 + _EPS)
        times = f"{value / base:.3g} x" if base else "above"
        detail = f"is {times} {method_base}'s {shown_base}; at most {rule.ratio:g} x allowed"
    else:
        assert rule.tolerance is not None
        direction = higher_is_better(quantity.name)
        if direction is None:
            raise SpecError(
                source_file,
                f"compare[{rule.index}]",
                f"{quantity.name!r} has no declared direction in peftcore.metrics; use max_ratio or must:",
            )
        worse = (base - value) if direction else (value - base)
        allowed = rule.tolerance.allowed(base)
        ok = not math.isnan(value) and worse <= allowed * (1 + _EPS) + 1e-12
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


# --------------------------------------------------------------------------- baseline comparison


def parse_tolerances(text: str) -> dict[str, Tolerance]:
    """``"f1:2%,accuracy:0.02"`` -> {"f1": 2 % relative, "accuracy": 0.02 absolute}.

    Names follow the quantity vocabulary of this module (``seen.f1``, ``peak_memory_bytes``,
    ``primary``). GateError on unreadable text; whether a case reports the metric is checked
    by :func:`compare_to_baseline`.
    """
    if not isinstance(text, str) or not text.strip():
        raise GateError("--metric-compare-fail: expected metric:tolerance pairs like f1:2%,accuracy:0.02")
    tolerances: dict[str, Tolerance] = {}
    for item in text.split(","):
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name:
            raise GateError(f"--metric-compare-fail: {item.strip()!r} is not metric:tolerance (e.g. f1:2%)")
        try:
            quantity = parse_quantity(name, lenient=True)
            tolerance = parse_tolerance(value)
        except ValueError as err:
            raise GateError(f"--metric-compare-fail: {name}: {err}") from None
        if quantity.label in tolerances:
            raise GateError(f"--metric-compare-fail: {name} is given twice")
        tolerances[quantity.label] = tolerance
    return tolerances


Verdict = Literal["regressed", "improved", "unchanged", "better", "worse", "same", "changed"]


@dataclass(frozen=True)
class ComparisonRow:
    """One quantity of one case, current against reference."""

    case_id: str
    key: CaseKey
    quantity: str  # label, e.g. "f1", "seen.f1", "training.peak_memory_bytes"
    baseline: float
    current: float
    higher_is_better: bool | None
    tolerance: Tolerance | None
    verdict: Verdict

    @property
    def delta(self) -> float:
        return self.current - self.baseline

    @property
    def relative(self) -> float | None:
        return self.delta / abs(self.baseline) if self.baseline else None


@dataclass(frozen=True)
class ComparisonResult:
    """Every compared quantity, plus the cases that could not be compared and why."""

    rows: tuple[ComparisonRow, ...]
    new_cases: tuple[str, ...] = ()  # only in the current records: reported, not failed
    missing_cases: tuple[str, ...] = ()  # only in the baseline
    unavailable: tuple[tuple[str, str], ...] = ()  # (case id, why it was not compared)
    notes: tuple[str, ...] = ()
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    matched_cases: tuple[str, ...] = ()  # in both (compared, or listed as unavailable)

    def _with(self, *verdicts: str) -> list[ComparisonRow]:
        return [r for r in self.rows if r.verdict in verdicts]

    @property
    def regressed(self) -> list[ComparisonRow]:
        return self._with("regressed")

    @property
    def improved(self) -> list[ComparisonRow]:
        return self._with("improved")

    @property
    def unchanged(self) -> list[ComparisonRow]:
        return self._with("unchanged")

    @property
    def failed(self) -> bool:
        return bool(self.regressed)

    def regressions_for(self, case_id: str) -> list[ComparisonRow]:
        return [r for r in self.regressed if r.case_id == case_id]

    def counts(self) -> str:
        parts = [f"{len(self.regressed)} regressed", f"{len(self.improved)} improved"]
        parts.append(f"{len(self.unchanged)} unchanged")
        if self.new_cases:
            parts.append(f"{len(self.new_cases)} new case(s) not in the baseline")
        if self.missing_cases:
            parts.append(f"{len(self.missing_cases)} baseline case(s) not run")
        return ", ".join(parts)

    def format_table(self, rows: Sequence[ComparisonRow] | None = None) -> str:
        """Plain text: the regressed rows (or ``rows``) with values, change and allowance."""
        rows = self.regressed if rows is None else rows
        lines = [f"metric comparison against baseline: {self.counts()}"]
        if rows:
            table = [("case", "metric", "baseline", "current", "change", "allowed")]
            for row in rows:
                allowed = (
                    f"{format_value(row.quantity, row.tolerance.allowed(row.baseline))} ({row.tolerance})"
                    if row.tolerance
                    else ""
                )
                table.append(
                    (
                        row.case_id,
                        row.quantity,
                        format_value(row.quantity, row.baseline),
                        format_value(row.quantity, row.current),
                        _signed(row),
                        allowed,
                    )
                )
            lines.extend(_align(table))
        if self.new_cases:
            lines.append("new (not in the baseline, not compared): " + ", ".join(self.new_cases))
        for case_id, why in self.unavailable:
            lines.append(f"not compared: {case_id}: {why}")
        lines.extend(f"note: {note}" for note in self.notes)
        return "\n".join(lines)


def _signed(row: ComparisonRow) -> str:
    text = format_value(row.quantity, abs(row.delta))
    sign = "+" if row.delta > 0 else "-" if row.delta < 0 else "±"
    rel = f" ({row.relative:+.1%})" if row.relative is not None and math.isfinite(row.relative) else ""
    return f"{sign}{text}{rel}"


def _align(table: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    return ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in table]


def scalar_quantities(records: Iterable[Mapping[str, Any]]) -> list[Quantity]:
    """Every metric and cost figure any record carries, metrics first, in a stable order."""
    metrics: dict[Quantity, None] = {}
    figures: dict[Quantity, None] = {}
    for record in records:
        for name in (*task_metrics(record), *((record.get("metrics") or {}).get("held_out") or {})):
            metrics.setdefault(Quantity("held_out", name))
        for name in (*task_metrics(record), *((record.get("metrics") or {}).get("seen") or {})):
            metrics.setdefault(Quantity("seen", name))
        for block, names in RECORD_FIGURES.items():
            values = record.get(block) or {}
            for name in (*names, *values):
                value = values.get(name) if isinstance(values, Mapping) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    figures.setdefault(Quantity(block, name))
    ordered = [q for q in metrics if q.block == "held_out"] + [q for q in metrics if q.block == "seen"]
    return ordered + list(figures)


def compare_records(
    records: Iterable[Mapping[str, Any]],
    baseline_records: Iterable[Mapping[str, Any]],
    tolerances: Mapping[str, Tolerance] | None = None,
) -> ComparisonResult:
    """Case by case (matched on method, model, task, seed), each quantity current vs baseline.

    With ``tolerances`` only those quantities are compared, and each row is regressed, improved
    (moved by more than the tolerance in the metric's direction) or unchanged. Without, every
    metric and cost figure is compared and rows read better, worse, same (or changed, for a
    figure without a direction).
    """
    current = {case_key(r): r for r in records}
    baseline = {case_key(r): r for r in baseline_records}
    chosen = [parse_quantity(name, lenient=True) for name in tolerances] if tolerances is not None else None
    rows, unavailable, notes = [], [], []
    for key in sorted(current.keys() & baseline.keys()):
        now, then = current[key], baseline[key]
        case_id = str(now["case_id"])
        if now["status"] != "finished" or then["status"] != "finished":
            which = "this run" if now["status"] != "finished" else "the baseline"
            status = now["status"] if now["status"] != "finished" else then["status"]
            unavailable.append((case_id, f"{status} in {which}"))
            continue
        if now.get("case_hash") and then.get("case_hash") and now["case_hash"] != then["case_hash"]:
            notes.append(f"{case_id}: resolved spec differs from the baseline's (case_hash changed)")
        for quantity in chosen if chosen is not None else scalar_quantities([now, then]):
            resolved = quantity.resolve(now)
            value, reference = resolved.value(now), resolved.value(then)
            if value is None or reference is None:
                continue
            direction = higher_is_better(resolved.name)
            tolerance = tolerances.get(quantity.label) if tolerances is not None else None
            rows.append(
                ComparisonRow(
                    case_id,
                    key,
                    resolved.label,
                    reference,
                    value,
                    direction,
                    tolerance,
                    _verdict(value, reference, direction, tolerance),
                )
            )
    new = sorted(str(current[k]["case_id"]) for k in current.keys() - baseline.keys())
    missing = sorted(str(baseline[k]["case_id"]) for k in baseline.keys() - current.keys())
    matched = sorted(str(current[k]["case_id"]) for k in current.keys() & baseline.keys())
    return ComparisonResult(
        tuple(rows),
        tuple(new),
        tuple(missing),
        tuple(unavailable),
        tuple(notes),
        dict(tolerances or {}),
        tuple(matched),
    )


def _verdict(value: float, reference: float, direction: bool | None, tolerance: Tolerance | None) -> Verdict:
    if direction is None:
        return "same" if value == reference else "changed"
    gain = (value - reference) if direction else (reference - value)  # > 0: better
    if math.isnan(gain):
        return "regressed" if tolerance is not None else "changed"
    if tolerance is None:
        return "better" if gain > 0 else "worse" if gain < 0 else "same"
    allowed = tolerance.allowed(reference) * (1 + _EPS) + 1e-12
    return "regressed" if gain < -allowed else "improved" if gain > allowed else "unchanged"


def compare_to_baseline(
    records: Sequence[Mapping[str, Any]],
    baseline_records: Sequence[Mapping[str, Any]],
    tolerances: Mapping[str, Tolerance],
) -> ComparisonResult:
    """Regressions of ``records`` against a stored baseline, within per-metric ``tolerances``.

    GateError when the baseline was recorded with another profile, or when a tolerance names a
    quantity that no finished case reports. Cases new since the baseline are listed, not failed.
    """
    _same_profile(records, baseline_records)
    finished = [r for r in records if r.get("status") == "finished"]
    if finished:
        for name in tolerances:
            quantity = parse_quantity(name, lenient=True)
            if quantity.is_metric and quantity.name != "primary":
                reported = {m for r in finished for m in reported_metrics(r)}
                if quantity.name not in reported:
                    raise GateError(
                        f"--metric-compare-fail: no case of this session reports metric {quantity.name!r}; "
                        + suggest(quantity.name, reported)
                    )
            elif not any(quantity.value(r) is not None for r in finished):
                raise GateError(f"--metric-compare-fail: no case of this session reports {quantity.words}")
    result = compare_records(records, baseline_records, tolerances)
    if records and baseline_records and not result.matched_cases:
        notes = (*result.notes, "no case of this session is in the baseline")
        result = dataclasses.replace(result, notes=notes)
    return result


def _same_profile(records: Iterable[Mapping[str, Any]], baseline: Iterable[Mapping[str, Any]]) -> None:
    now = {str(r.get("profile")) for r in records if r.get("profile")}
    then = {str(r.get("profile")) for r in baseline if r.get("profile")}
    if now and then and now != then:
        raise GateError(
            f"the baseline was recorded with profile {', '.join(sorted(then))}; this run is "
            f"{', '.join(sorted(now))}: budgets differ, so compare against a baseline of the same profile"
        )


def load_baseline(path: str | Path, profile: str | None = None) -> list[dict[str, Any]]:
    """Records of a baseline: a pytest-benchmark JSON file (``--benchmark-save``) whose
    benchmarks carry ``extra_info["peftcore_record"]``, or a run folder (``<run>/cases/``).

    GateError when the path is missing, is neither, holds records of another format, or (with
    ``profile``) was recorded with another profile.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "cases").is_dir():
            raise GateError(f"baseline {path}: not a run folder (no cases/) nor a pytest-benchmark JSON file")
        run = load_run(path)
        if run.problems:
            raise GateError(f"baseline {run.problems[0]}")
        records = [dict(r) for r in run.records]
        if not records:
            raise GateError(f"baseline {path}: the run has no case records")
    elif path.is_file():
        records = _records_from_benchmark_json(path)
    else:
        raise GateError(f"baseline {path} does not exist")
    if profile is not None:
        _same_profile([{"profile": profile}], records)
    return records


def _records_from_benchmark_json(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateError(f"baseline {path}: not a readable JSON file ({err})") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list):
        raise GateError(f"baseline {path}: not a pytest-benchmark file (no 'benchmarks' list)")
    records = []
    for bench in benchmarks:
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        record = extra.get("peftcore_record") if isinstance(extra, dict) else None
        if record is None:
            continue  # a benchmark that is not a peftcore case
        where = f"baseline {path}, benchmark {bench.get('name', '?')!r}"
        if not isinstance(record, dict):
            raise GateError(f"{where}: peftcore_record is not a JSON object")
        if record.get("format") != RECORD_FORMAT:
            raise GateError(
                f"{where}: record format {record.get('format')!r}, this peftcore reads {RECORD_FORMAT}; "
                "save a new baseline with --benchmark-save"
            )
        missing = [k for k in REQUIRED_KEYS if k not in record]
        if missing or record["status"] not in STATUSES:
            raise GateError(f"{where}: malformed record (missing {', '.join(missing) or 'a known status'})")
        records.append(record)
    if not records:
        raise GateError(
            f"baseline {path}: no benchmark carries extra_info['peftcore_record'] "
            "(saved by another tool or an older peftcore; save a new baseline with --benchmark-save)"
        )
    return records
