"""The gates a spec declares, parsed when specs load: ``expect:`` bounds and ``compare:`` rules.

Checking them against records is :mod:`peftcore.gates`; here they only become typed values, so
a malformed gate fails at collection (and in ``peftcore list``) with the file and key named,
before anything trains. Quantity names (``f1``, ``seen.f1``, ``primary``, ``peak_memory_bytes``,
...) are those of :mod:`peftcore.vocab.quantities`.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import SpecError
from peftcore.spec.schema import plain, suggest
from peftcore.units import parse_bytes
from peftcore.vocab.metrics import has_example_scores
from peftcore.vocab.quantities import Quantity, Tolerance, parse_quantity, parse_tolerance


def _number(value: Any, *, bytes_ok: bool) -> float:
    """A bound: a YAML number, a number PyYAML left as text (``2.0e9``), or ``"2 GiB"``."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        if bytes_ok:
            try:
                return float(parse_bytes(value))
            except ValueError:
                pass
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
    expect: Any,
    source_file: str | Path | None,
    known_metrics: Collection[str] = (),
    *,
    lenient: bool = False,
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
            quantity = parse_quantity(str(name), known_metrics, lenient=lenient)
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


@dataclass(frozen=True)
class Expect:
    """A spec's ``expect:`` block: absolute bounds on metrics and cost figures.

    ``expect: {accuracy: {min: 0.40}, peak_memory_bytes: {max: 2 GiB, methods: [qlora]}}``
    """

    bounds: tuple[Bound, ...] = ()
    written: Mapping[str, Any] = field(default_factory=dict)  # as in the file, for records

    @classmethod
    def from_spec(cls, value: Any, file: str | Path | None, key: str = "expect") -> Expect:
        """Parse a block; metric names are checked against the known ones by :meth:`check_names`."""
        return cls(tuple(parse_expect(value, file, lenient=True)), plain(value))

    def to_spec(self) -> Any:
        return plain(self.written)

    def check_names(self, file: str | Path | None, known_metrics: Collection[str] = ()) -> None:
        """SpecError for a bound naming neither a cost figure nor a registered or known metric."""
        parse_expect(self.written, file, known_metrics)

    def __bool__(self) -> bool:
        return bool(self.bounds)


RuleKind = Literal["beat", "below", "above", "max_drop", "max_ratio"]
_RULE_KEYS = (
    "metric",
    "figure",
    "case",
    "baseline",
    "must",
    "max_drop",
    "max_ratio",
    "confidence",
    "task",
    "model",
    "why",
)
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
    # With a confidence (metrics only; must: beat or max_drop): the paired interval of the
    # difference over the examples both cases scored decides, not the bare values.
    confidence: float | None = None

    def describe(self) -> str:
        condition = {
            "beat": "must beat",
            "below": "must be below",
            "above": "must be above",
            "max_drop": f"may be worse by at most {self.tolerance} than",
            "max_ratio": f"must be at most {self.ratio:g} x",
        }[self.kind]
        sure = f" (at {self.confidence:.0%} confidence)" if self.confidence is not None else ""
        return f"{self.quantity.label} of {'/'.join(self.cases)} {condition} {self.baseline}{sure}"


def parse_rules(rules: Any, source_file: str | Path | None) -> list[Rule]:
    """Validate a ``compare:`` list; a malformed rule raises a one-line SpecError.

    Each rule names one quantity (``metric:`` or ``figure:``), the methods it checks (``case:``,
    a name, a glob such as ``"*"`` or a list), the method they are held against (``baseline:``)
    and one condition: ``must: beat | below | above``, ``max_drop: 0.02 | 2%`` or
    ``max_ratio: 0.8``. Optional: ``task:``, ``model:`` (names or lists), ``why:`` (text
    added to the failure message) and ``confidence:`` (in (0, 1), for a metric with ``must:
    beat`` or ``max_drop``: ``beat`` holds only when the paired interval of the difference lies on
    the better side of 0, ``max_drop`` is checked on the interval's worse bound).
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
    confidence = _confidence(rule, kind, kind_key, source_file, key)
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
        confidence,
    )


def _confidence(
    rule: Mapping[str, Any], kind: RuleKind, kind_key: str, source_file: str | Path | None, key: str
) -> float | None:
    if "confidence" not in rule:
        return None
    value = rule["confidence"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise SpecError(
            source_file, f"{key}.confidence", f"expected a number in (0, 1) like 0.95, got {value!r}"
        )
    if kind_key != "metric" or kind not in ("beat", "max_drop"):
        raise SpecError(
            source_file,
            f"{key}.confidence",
            "only a metric: rule with must: beat or max_drop: has a paired interval (per-example scores)",
        )
    name = str(rule["metric"]).rpartition(".")[2]
    if name != "primary" and not has_example_scores(name):
        raise SpecError(
            source_file,
            f"{key}.confidence",
            f"metric {name!r} keeps no per-example scores (not a mean over examples, nor macro_f1 "
            "or perplexity), so it has no paired interval; drop confidence: for this rule",
        )
    return float(value)


def _patterns(value: Any, source_file: str | Path | None, key: str) -> tuple[str, ...]:
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        return tuple(value)
    raise SpecError(source_file, key, "expected a name, a glob like 'lora*', or a list of names")


@dataclass(frozen=True)
class Compare:
    """A profile's ``compare:`` list: rules between the cases of a session."""

    rules: tuple[Rule, ...] = ()
    written: tuple[Any, ...] = ()  # as in the file, for records

    @classmethod
    def from_spec(cls, value: Any, file: str | Path | None, key: str = "compare") -> Compare:
        return cls(tuple(parse_rules(value, file)), tuple(plain(value) or ()))

    def to_spec(self) -> Any:
        return list(plain(self.written))

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __iter__(self) -> Any:
        return iter(self.rules)


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` matches any of ``patterns`` (method names or globs like ``lora*``).

    A deployment variant (``lora@nf4``) matches only a pattern that names a variant (has an
    ``@``): ``case: "*"`` means every method as trained, not every variant of it too.
    """
    variant = "@" in name
    return any(fnmatch.fnmatchcase(name, p) for p in patterns if ("@" in p) == variant or not variant)
