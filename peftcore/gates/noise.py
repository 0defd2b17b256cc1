"""The statistical baseline gate: a regression is a drop larger than the noise measured for it.

A tolerance file with ``mode: statistical`` (written by ``peftcore tolerances RUN --statistical``
from a run of several seeds) gives each case's quantities their measured training noise::

    mode: statistical
    confidence: 0.95                  # family-wise, Holm over every quantity the session checks
    cases:
      lora-smollm2-135m-sst2:
        accuracy: {training_sd: 0.031}          # sd over training seeds (absolute)
        training.peak_memory_bytes: {training_sd: 4%, floor: 30%}   # relative to the baseline
        training.trainable_params: exact        # exact by construction

For each quantity of each case matched with the baseline (same method, model, task, seed), the
drop d (in the quantity's bad direction) is set against the noise a rerun of the same code
shows: for a metric, the paired standard error of the difference over the examples both runs
scored (sd of per-example differences over sqrt(n); a paired bootstrap for macro F1 and
perplexity), and the training noise of both runs, ``sqrt(se**2 + 2 * training_sd**2)``
(:func:`peftcore.stats.regression.regression_p_value`). An untrained case (``base``) computes
the same numbers on every run, so its null is exact reproduction up to the floor, without the
sampling error. The one-sided p-values of every quantity are
corrected by Holm's step-down method; a quantity regressed when its adjusted p-value is under
``1 - confidence`` and its drop exceeds its ``floor`` (what no gate can resolve: last-digit float
differences between CPU kernels, the allocator's slack in resident memory). ``exact`` quantities
fail on any change for the worse. Nothing here imports pytest or torch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.errors import GateError
from peftcore.results.compare import CompareError, compare
from peftcore.results.store import newest_by_case
from peftcore.vocab.quantities import Quantity, higher_is_better, parse_quantity, parse_tolerance
from peftcore.vocab.record import case_name, case_seed

# Drops no gate can resolve. Metrics: float differences of fp32 scoring on another CPU's kernels,
# relative to the value's size (the untrained base scored on an AMX Xeon and on an AVX2 EPYC:
# LAMBADA perplexity 47.72409 and 47.72367, 9e-6 apart relatively; Brier scores 1.3e-6 apart),
# with a tenfold margin. Resident peak memory: the allocator's slack between machines (22.5%
# measured between two CPU kinds, docs/gates.md, "Gates that know noise").
METRIC_FLOOR = 1e-4
MEMORY_FLOOR_PERCENT = 30.0


@dataclass(frozen=True)
class Noise:
    """How one quantity of one case varies between reruns of the same code."""

    training_sd: float = 0.0  # sd over training seeds: absolute, or percent of the baseline
    relative: bool = False
    exact: bool = False
    floor: float = 0.0  # drops at or under this never count (absolute, or percent if floor_relative)
    floor_relative: bool = False

    def sd_at(self, reference: float) -> float:
        return self.training_sd / 100 * abs(reference) if self.relative else self.training_sd

    def floor_at(self, reference: float) -> float:
        floor = self.floor / 100 * abs(reference) if self.floor_relative else self.floor
        return max(floor, METRIC_FLOOR * max(1.0, abs(reference)))

    def describe(self) -> str:
        if self.exact:
            return "exact"
        sd = f"{self.training_sd:.3g}%" if self.relative else f"{self.training_sd:.3g}"
        return f"training sd {sd}"


@dataclass(frozen=True)
class NoiseModel(Mapping[str, Noise]):
    """Per case (``<method>-<model>-<task>``), each quantity's :class:`Noise`; the family-wise
    ``confidence`` of the gate. Reads as an empty mapping of default tolerances, so callers that
    take :class:`peftcore.gates.tolerances.Tolerances` can hold one."""

    cases: Mapping[str, Mapping[str, Noise]] = field(default_factory=dict)
    confidence: float = 0.95
    source: str = "--metric-compare-fail"

    def for_record(self, record: Mapping[str, Any]) -> dict[str, Noise]:
        return dict(self.cases.get(case_name(record), {}))

    def labels(self) -> set[str]:
        return {label for table in self.cases.values() for label in table}

    def __getitem__(self, label: str) -> Noise:
        raise KeyError(label)

    def __iter__(self) -> Any:
        return iter(())

    def __len__(self) -> int:
        return 0

    def __bool__(self) -> bool:
        return any(self.cases.values())


# --------------------------------------------------------------------------- reading the file


def _percent_or_number(value: Any, where: str) -> tuple[float, bool]:
    try:
        parsed = parse_tolerance(value)
    except ValueError as err:
        raise GateError(f"{where}: {err}") from None
    return parsed.value, parsed.relative


def _noise(raw: Any, where: str) -> Noise:
    if raw == "exact":
        return Noise(exact=True)
    if not isinstance(raw, Mapping) or not raw or set(raw) - {"training_sd", "floor"}:
        raise GateError(
            f"{where}: expected 'exact' or a mapping with training_sd (and floor), got {raw!r:.80}"
        )
    sd, relative = _percent_or_number(raw.get("training_sd", 0), f"{where}.training_sd")
    floor, floor_relative = _percent_or_number(raw.get("floor", 0), f"{where}.floor")
    return Noise(sd, relative, False, floor, floor_relative)


def noise_model(raw: Mapping[str, Any], path: Path) -> NoiseModel:
    """The statistical tolerance file ``raw`` (already parsed YAML) of ``path``; GateError naming
    the file and key for anything malformed."""
    unknown = set(raw) - {"mode", "confidence", "cases", "measured"}
    if unknown:
        raise GateError(
            f"{path}: unknown key(s) {', '.join(sorted(map(str, unknown)))}; expected mode, confidence, cases"
        )
    confidence = raw.get("confidence", 0.95)
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0 < confidence < 1:
        raise GateError(f"{path}: key 'confidence': expected a number in (0, 1), got {confidence!r}")
    cases = raw.get("cases") or {}
    if not isinstance(cases, Mapping):
        raise GateError(f"{path}: key 'cases': expected a mapping of case -> quantities")
    tables: dict[str, dict[str, Noise]] = {}
    for case, table in cases.items():
        where = f"{path}: key 'cases.{case}'"
        if not isinstance(table, Mapping):
            raise GateError(f"{where}: expected a mapping of quantity -> noise")
        entries = {}
        for name, value in table.items():
            try:
                label = parse_quantity(str(name), lenient=True).label
            except ValueError as err:
                raise GateError(f"{where}: {name}: {err}") from None
            entries[label] = _noise(value, f"{where}.{name}")
        tables[str(case)] = entries
    return NoiseModel(tables, float(confidence), str(path))


def noise_yaml(model: NoiseModel, header: str, measured: Mapping[str, Any]) -> str:
    import json

    import yaml

    def entry(noise: Noise) -> Any:
        if noise.exact:
            return "exact"
        out: dict[str, Any] = {
            "training_sd": f"{noise.training_sd:.4g}%" if noise.relative else _sig(noise.training_sd)
        }
        if noise.floor:
            out["floor"] = f"{noise.floor:g}%" if noise.floor_relative else noise.floor
        return out

    body = {
        "mode": "statistical",
        "confidence": model.confidence,
        "measured": dict(measured),
        "cases": {
            case: {k: entry(v) for k, v in sorted(t.items())} for case, t in sorted(model.cases.items())
        },
    }
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(json.loads(json.dumps(body)), sort_keys=False, width=110)


def _sig(value: float) -> float:
    return float(f"{value:.4g}")


# --------------------------------------------------------------------------- measuring the noise

EXACT = ("training.trainable_params", "training.adapter_bytes")
MEMORY = "training.peak_memory_bytes"
# AdaLoRA prunes ranks as it trains; what it saves depends on the ranks kept, so its adapter
# size is measured like any figure, not held exact (the other methods' adapters have fixed shapes).
SIZE_FROM_TRAINING = frozenset({"adalora"})
SIZE_FLOOR_PERCENT = 2.0
# A standard deviation from a handful of seeds is itself uncertain: the gate uses its one-sided
# upper confidence bound (chi-square with seeds - 1 degrees of freedom), not the estimate.
SD_UPPER_CONFIDENCE = 0.8


def upper_sd(values: Sequence[float], confidence: float = SD_UPPER_CONFIDENCE) -> float:
    """The ``confidence`` upper bound of the standard deviation of ``values`` (ddof 1).

    >>> round(upper_sd([0.0, 1.0, 2.0]), 3)  # sd 1.0 from 3 values
    1.891
    """
    from scipy.stats import chi2

    n = len(values)
    if n < 2:
        return 0.0
    mean = math.fsum(values) / n
    variance = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(variance * (n - 1) / float(chi2.ppf(1 - confidence, n - 1)))


# The expected range of n normal draws in standard deviations (d2 of control charts): a spread
# (max - min) over n seeds estimates the standard deviation as spread / d2, with n - 1 degrees
# of freedom (about; the range is nearly as efficient as the sd for n <= 4).
RANGE_D2 = {2: 1.128, 3: 1.693, 4: 2.059, 5: 2.326}


def sd_from_spread(spread: float, seeds: int, confidence: float = SD_UPPER_CONFIDENCE) -> float:
    """The ``confidence`` upper bound of the standard deviation a spread over ``seeds`` seeds
    measured.

    >>> round(sd_from_spread(0.1, 3), 4)  # 0.1 / 1.693, times sqrt(2 / chi2.ppf(0.2, 2))
    0.1251
    """
    from scipy.stats import chi2

    df = seeds - 1
    return spread / RANGE_D2[seeds] * math.sqrt(df / float(chi2.ppf(1 - confidence, df)))


def measured_noise(
    records: Iterable[Mapping[str, Any]],
    *,
    confidence: float = 0.95,
    earlier: Mapping[str, Mapping[str, Any]] | None = None,
    earlier_seeds: int = 3,
) -> NoiseModel:
    """Per case, each quantity's training noise over the seeds of ``records``: every held-out,
    seen and ``ood.<task>`` metric, peak training memory (relative), trainable parameters and
    adapter bytes (exact, but AdaLoRA's size measured).

    A case with one seed in ``records`` says nothing of its noise: its metrics take it from
    ``earlier`` (per case, metric label -> spread over ``earlier_seeds`` seeds: the tables of a
    ``peftcore tolerances`` file) when given, else they are left out of the gate; its exact
    figures stay exact and its peak memory gets the floor only. GateError when no case has two
    seeds and nothing earlier is given."""
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for record in newest_by_case(records).values():  # one record a seed (a resumed run adopts)
        by_case.setdefault(case_name(record), []).append(record)
    if earlier is None and not any(len({case_seed(r) for r in group}) > 1 for group in by_case.values()):
        raise GateError("noise needs a run of several seeds (pytest benchmarks --seeds 0,1,2)")
    cases: dict[str, dict[str, Noise]] = {}
    for name, group in sorted(by_case.items()):
        table: dict[str, Noise] = {}
        seeded = len(group) > 1
        spreads = (earlier or {}).get(name) or {}
        splits = sorted({split for r in group for split in (r.get("metrics") or {})})
        for split in splits:
            metrics = sorted({m for r in group for m in ((r.get("metrics") or {}).get(split) or {})})
            for metric in metrics:
                quantity = Quantity(split, metric)
                values = [v for r in group if (v := quantity.value(r)) is not None and math.isfinite(v)]
                if len(values) != len(group):
                    continue
                if seeded:
                    table[quantity.label] = Noise(upper_sd(values))
                elif quantity.label in spreads:
                    table[quantity.label] = Noise(
                        sd_from_spread(float(spreads[quantity.label]), earlier_seeds)
                    )
        for label in EXACT:
            values = [v for r in group if (v := parse_quantity(label).value(r)) is not None]
            if len(values) != len(group):
                continue
            if label == "training.adapter_bytes" and _trains_its_size(group):
                table[label] = _relative_noise(values, SIZE_FLOOR_PERCENT)
            else:
                table[label] = Noise(exact=True)
        memory = [v for r in group if (v := parse_quantity(MEMORY).value(r)) is not None]
        if len(memory) == len(group):
            table[MEMORY] = _relative_noise(memory, MEMORY_FLOOR_PERCENT)
        cases[name] = table
    return NoiseModel(cases, confidence, "measured")


def _trains_its_size(group: Sequence[Mapping[str, Any]]) -> bool:
    method = (group[0].get("spec") or {}).get("method") or {}
    return isinstance(method, Mapping) and str(method.get("tuner", "")).lower() in SIZE_FROM_TRAINING


def _relative_noise(values: Sequence[float], floor_percent: float) -> Noise:
    mean = math.fsum(values) / len(values)
    sd = upper_sd([100 * v / mean for v in values]) if mean else 0.0
    return Noise(sd, relative=True, floor=floor_percent, floor_relative=True)


# --------------------------------------------------------------------------- the paired drop


def sampling_stderr(now: Mapping[str, Any], then: Mapping[str, Any], quantity: Quantity) -> float:
    """The paired standard error of ``now - then`` for a metric, over the examples both records
    scored. GateError when either lacks per-example scores of it or they scored different examples."""
    try:
        return compare(now, then, quantity.name, split=quantity.block).stderr
    except CompareError as err:
        raise GateError(
            f"--metric-compare-fail (statistical): {now.get('case_id')} {quantity.label}: {err}; "
            "record the baseline with this peftcore (docs/gates.md, 'Gates that know noise')"
        ) from None


@dataclass(frozen=True)
class Drop:
    """One quantity of one case against the baseline, with its noise and one-sided p-values."""

    drop: float  # > 0: worse than the baseline
    noise_sd: float  # sqrt(se**2 + 2 training_sd**2)
    p_worse: float
    p_better: float
    within_floor: bool


def untrained(record: Mapping[str, Any]) -> bool:
    """Whether the case trains nothing (the ``base`` method: tuner ``none``)."""
    method = (record.get("spec") or {}).get("method") or {}
    return isinstance(method, Mapping) and str(method.get("tuner", "")).lower() == "none"


def paired_drop(
    now: Mapping[str, Any], then: Mapping[str, Any], quantity: Quantity, noise: Noise
) -> Drop | None:
    """The drop of ``quantity`` from ``then`` (the baseline) to ``now`` and how likely noise
    makes it; None when either record lacks the quantity or it has no direction."""
    from peftcore.stats.regression import regression_p_value

    value, reference = quantity.value(now), quantity.value(then)
    direction = higher_is_better(quantity.name)
    if value is None or reference is None or direction is None:
        return None
    drop = (reference - value) if direction else (value - reference)
    if math.isnan(drop):
        return Drop(math.nan, math.nan, 0.0, 1.0, False)
    if noise.exact:
        return Drop(drop, 0.0, 0.0 if drop > 0 else 1.0, 0.0 if drop < 0 else 1.0, drop <= 0)
    # An untrained case computes the same numbers on every run: its null is exact reproduction
    # up to float rounding (the floor), so the paired sampling error, a stand-in for how far two
    # trainings disagree example by example, does not apply to it.
    sampled = quantity.is_metric and not untrained(now)
    se = sampling_stderr(now, then, quantity) if sampled else 0.0
    sd = noise.sd_at(reference)
    return Drop(
        drop,
        math.sqrt(se**2 + 2 * sd**2),
        regression_p_value(drop, se, sd),
        regression_p_value(-drop, se, sd),
        abs(drop) <= noise.floor_at(reference),
    )
