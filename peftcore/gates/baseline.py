"""Regressions against a stored baseline (``--metric-compare-fail``) and run-to-run comparison.

Cases are matched across runs on (method, model, task, seed); each metric and cost figure of a
matched pair is compared in its declared direction (:func:`peftcore.vocab.quantities.higher_is_better`),
within a tolerance when one is given. A baseline is a pytest-benchmark JSON file
(``--benchmark-save``) or a run folder. Nothing here imports pytest.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import GateError, suggest
from peftcore.gates.noise import Drop, Noise, NoiseModel, paired_drop
from peftcore.gates.tolerances import Tolerances
from peftcore.results.store import load_run, newest_by_case
from peftcore.vocab.quantities import (
    RECORD_FIGURES,
    Quantity,
    Tolerance,
    format_value,
    higher_is_better,
    metric_names,
    parse_quantity,
    reported_metrics,
)
from peftcore.vocab.record import CaseKey, Record, RecordError, check_record

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
    # The statistical gate (peftcore.gates.noise): the noise the drop is set against, and the
    # Holm-adjusted one-sided p-value of a drop this large.
    noise_sd: float | None = None
    p_value: float | None = None
    noise: str | None = None

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
                    else _noise_words(row)
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


def _noise_words(row: ComparisonRow) -> str:
    if row.p_value is None:
        return ""
    if row.noise == "exact":
        return "none (exact)"
    sd = format_value(row.quantity, row.noise_sd) if row.noise_sd is not None else "?"
    return f"noise sd {sd} ({row.noise}), Holm p = {row.p_value:.2g}"


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
        for split in ("held_out", "seen"):
            for name in metric_names(record, split):
                metrics.setdefault(Quantity(split, name))
        for block, names in RECORD_FIGURES.items():
            values = record.get(block) or {}
            for name in (*names, *values):
                value = values.get(name) if isinstance(values, Mapping) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    figures.setdefault(Quantity(block, name))
    ordered = [q for q in metrics if q.block == "held_out"] + [q for q in metrics if q.block == "seen"]
    return ordered + list(figures)


@dataclass(frozen=True)
class _Matched:
    """The cases of a run matched with the baseline's (on method, model, task, seed)."""

    pairs: list[tuple[CaseKey, Mapping[str, Any], Mapping[str, Any]]]  # both finished: (key, now, then)
    unavailable: list[tuple[str, str]]  # (case id, why): matched, but one side did not finish
    notes: list[str]
    new: tuple[str, ...]  # in the run, not in the baseline
    missing: tuple[str, ...]  # in the baseline, not run
    matched: tuple[str, ...]

    def result(self, rows: Sequence[ComparisonRow], tolerances: Mapping[str, Tolerance]) -> ComparisonResult:
        return ComparisonResult(
            tuple(rows),
            self.new,
            self.missing,
            tuple(self.unavailable),
            tuple(self.notes),
            dict(tolerances),
            self.matched,
        )


def _match(records: Iterable[Mapping[str, Any]], baseline_records: Iterable[Mapping[str, Any]]) -> _Matched:
    current = newest_by_case(records, finished_only=False)
    baseline = newest_by_case(baseline_records, finished_only=False)
    pairs, unavailable, notes = [], [], []
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
        pairs.append((key, now, then))
    return _Matched(
        pairs,
        unavailable,
        notes,
        tuple(sorted(str(current[k]["case_id"]) for k in current.keys() - baseline.keys())),
        tuple(sorted(str(baseline[k]["case_id"]) for k in baseline.keys() - current.keys())),
        tuple(sorted(str(current[k]["case_id"]) for k in current.keys() & baseline.keys())),
    )


def compare_records(
    records: Iterable[Mapping[str, Any]],
    baseline_records: Iterable[Mapping[str, Any]],
    tolerances: Mapping[str, Tolerance] | None = None,
) -> ComparisonResult:
    """Case by case (matched on method, model, task, seed), each quantity current vs baseline.

    With ``tolerances`` (a plain mapping, or :class:`Tolerances` with per-case tables) only the
    quantities a case has a tolerance for are compared, and each row is regressed, improved
    (moved by more than the tolerance in the metric's direction) or unchanged. Without, every
    metric and cost figure is compared and rows read better, worse, same (or changed, for a
    figure without a direction).
    """
    matched = _match(records, baseline_records)
    table = tolerances if isinstance(tolerances, Tolerances) or tolerances is None else Tolerances(tolerances)
    rows = []
    for key, now, then in matched.pairs:
        case_tolerances = table.for_record(now) if table is not None else None
        chosen = (
            [parse_quantity(name, lenient=True) for name in case_tolerances]
            if case_tolerances is not None
            else scalar_quantities([now, then])
        )
        for quantity in chosen:
            resolved = quantity.resolve(now)
            value, reference = resolved.value(now), resolved.value(then)
            if value is None or reference is None:
                continue
            direction = higher_is_better(resolved.name)
            tolerance = case_tolerances.get(quantity.label) if case_tolerances is not None else None
            rows.append(
                ComparisonRow(
                    str(now["case_id"]),
                    key,
                    resolved.label,
                    reference,
                    value,
                    direction,
                    tolerance,
                    _verdict(value, reference, direction, tolerance),
                )
            )
    return matched.result(rows, tolerances or {})


def _verdict(value: float, reference: float, direction: bool | None, tolerance: Tolerance | None) -> Verdict:
    if direction is None:
        return "same" if value == reference else "changed"
    gain = (value - reference) if direction else (reference - value)  # > 0: better
    if math.isnan(gain):
        return "regressed" if tolerance is not None else "changed"
    if tolerance is None:
        return "better" if gain > 0 else "worse" if gain < 0 else "same"
    allowed = tolerance.limit(reference)
    return "regressed" if gain < -allowed else "improved" if gain > allowed else "unchanged"


def compare_statistical(
    records: Iterable[Mapping[str, Any]], baseline_records: Iterable[Mapping[str, Any]], model: NoiseModel
) -> ComparisonResult:
    """Case by case, each quantity ``model`` measured noise for, against the baseline: regressed
    when the drop is beyond its floor and the Holm-adjusted one-sided p-value of a drop that large
    under the measured noise is under ``1 - model.confidence`` (:mod:`peftcore.gates.noise`);
    improved likewise in the other direction. GateError when a metric lacks per-example scores
    on either side, or the two were scored on different examples."""
    from peftcore.stats.multiple import holm

    matched = _match(records, baseline_records)
    pending: list[tuple[str, CaseKey, Quantity, float, float, Noise, Drop]] = []
    for key, now, then in matched.pairs:
        for label, noise in model.for_record(now).items():
            quantity = parse_quantity(label, lenient=True).resolve(now)
            drop = paired_drop(now, then, quantity, noise)
            if drop is not None:
                value, reference = quantity.value(now) or 0.0, quantity.value(then) or 0.0
                pending.append((str(now["case_id"]), key, quantity, reference, value, noise, drop))
    alpha = 1 - model.confidence
    worse: list[float] = list(holm([d.p_worse for *_, d in pending])) if pending else []
    better: list[float] = list(holm([d.p_better for *_, d in pending])) if pending else []
    rows = []
    for (case_id, key, quantity, reference, value, noise, drop), p_worse, p_better in zip(
        pending, worse, better, strict=True
    ):
        if math.isnan(drop.drop) or (not drop.within_floor and p_worse < alpha):
            verdict: Verdict = "regressed"
        elif not drop.within_floor and p_better < alpha:
            verdict = "improved"
        else:
            verdict = "unchanged"
        rows.append(
            ComparisonRow(
                case_id,
                key,
                quantity.label,
                reference,
                value,
                higher_is_better(quantity.name),
                None,
                verdict,
                noise_sd=drop.noise_sd,
                p_value=float(p_worse if drop.drop > 0 else p_better),
                noise=noise.describe(),
            )
        )
    matched.notes.append(
        f"statistical gate: {len(rows)} quantities, Holm at family-wise {model.confidence:.0%} "
        f"(noise measured in {model.source})"
    )
    return matched.result(rows, {})


def compare_to_baseline(
    records: Sequence[Mapping[str, Any]],
    baseline_records: Sequence[Mapping[str, Any]],
    tolerances: Mapping[str, Tolerance] | NoiseModel,
) -> ComparisonResult:
    """Regressions of ``records`` against a stored baseline, within per-metric ``tolerances``.

    GateError when the baseline was recorded with another profile, or when a tolerance names a
    quantity that no finished case reports. Cases new since the baseline are listed, not failed.
    """
    _same_profile(records, baseline_records)
    finished = [r for r in records if r.get("status") == "finished"]
    # A name is a typo when neither this session nor the baseline reports it; a slice of the
    # profile (-k, -m) may simply not include the cases that report it.
    known = [*finished, *(r for r in baseline_records if r.get("status") == "finished")]
    if finished:
        labels = tolerances.labels() if isinstance(tolerances, Tolerances) else set(tolerances)
        for name in sorted(labels):
            quantity = parse_quantity(name, lenient=True)
            if quantity.is_metric and quantity.name != "primary":
                reported = {m for r in known for m in reported_metrics(r)}
                if quantity.name not in reported:
                    raise GateError(
                        f"--metric-compare-fail: no case of this session or the baseline reports metric "
                        f"{quantity.name!r}; " + suggest(quantity.name, reported)
                    )
            elif not any(quantity.value(r) is not None for r in known):
                raise GateError(
                    f"--metric-compare-fail: no case of this session or the baseline reports {quantity.words}"
                )
    if isinstance(tolerances, NoiseModel):
        result = compare_statistical(records, baseline_records, tolerances)
    else:
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


def load_baseline(path: str | Path, profile: str | None = None) -> list[Record]:
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
        records = list(run.records)
        if not records:
            raise GateError(f"baseline {path}: the run has no case records")
    elif path.is_file():
        records = _records_from_benchmark_json(path)
    else:
        raise GateError(f"baseline {path} does not exist")
    if profile is not None:
        _same_profile([{"profile": profile}], records)
    return records


def _records_from_benchmark_json(path: Path) -> list[Record]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateError(f"baseline {path}: not a readable JSON file ({err})") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list):
        raise GateError(f"baseline {path}: not a pytest-benchmark file (no 'benchmarks' list)")
    records: list[Record] = []
    for bench in benchmarks:
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        record = extra.get("peftcore_record") if isinstance(extra, dict) else None
        if record is None:
            continue  # a benchmark that is not a peftcore case
        where = f"baseline {path}, benchmark {bench.get('name', '?')!r}"
        if not isinstance(record, dict):
            raise GateError(f"{where}: peftcore_record is not a JSON object")
        try:
            records.append(check_record(record, where))
        except RecordError as err:
            raise GateError(f"{err}; save a new baseline with --benchmark-save") from None
    if not records:
        raise GateError(
            f"baseline {path}: no benchmark carries extra_info['peftcore_record'] "
            "(saved by another tool or an older peftcore; save a new baseline with --benchmark-save)"
        )
    return records
