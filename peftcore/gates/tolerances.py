"""How far each number of a case may move against a baseline before it counts as a regression.

``--metric-compare-fail`` takes tolerances inline (``f1:2%,accuracy:0.02``: every case alike)
or as a file, written by ``peftcore tolerances RUN`` from a run of several training seeds: for
each case (method, model, task) and each of its numbers, how far apart the seeds landed. So a
case is allowed the noise its own training shows, not the noisiest method's, an untrained case
(which reproduces exactly) is allowed none, and the exactly reproducible figures (trainable
parameters, adapter bytes) must match exactly::

    # tolerances.yaml
    default: {accuracy: 0.05}                    # a case the file does not list
    cases:
      base-smollm2-135m-sst2: {accuracy: 0, brier_score: 0}
      lora-smollm2-135m-sst2: {accuracy: 0.075, brier_score: 0.0121, trainable_params: 0}
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from peftcore.errors import GateError, SpecError
from peftcore.results.store import Run, read_run, resolve_run
from peftcore.spec.loader import read_yaml
from peftcore.storage import atomic_write_text
from peftcore.vocab.quantities import (
    Quantity,
    Tolerance,
    parse_quantity,
    parse_tolerance,
)
from peftcore.vocab.record import case_name, case_seed

if TYPE_CHECKING:
    from peftcore.gates.noise import NoiseModel


@dataclass(frozen=True)
class Tolerances(Mapping[str, Tolerance]):
    """Tolerances by quantity label (``f1``, ``seen.f1``, ``training.peak_memory_bytes``): the
    ``default`` table, which the object reads as, and per-case tables that replace its entries."""

    default: Mapping[str, Tolerance] = field(default_factory=dict)
    cases: Mapping[str, Mapping[str, Tolerance]] = field(default_factory=dict)
    source: str = "--metric-compare-fail"

    def for_record(self, record: Mapping[str, Any]) -> dict[str, Tolerance]:
        return {**self.default, **self.cases.get(case_name(record), {})}

    def labels(self) -> set[str]:
        return {*self.default, *(label for table in self.cases.values() for label in table)}

    def __getitem__(self, label: str) -> Tolerance:
        return self.default[label]

    def __iter__(self) -> Iterator[str]:
        return iter(self.default)

    def __len__(self) -> int:
        return len(self.default)

    def __bool__(self) -> bool:  # a file of per-case tables only is not "no tolerances"
        return bool(self.default) or any(self.cases.values())


def _quantity_label(name: str, where: str) -> str:
    try:
        return parse_quantity(name, lenient=True).label
    except ValueError as err:
        raise GateError(f"{where}: {name}: {err}") from None


def parse_tolerances(text: str) -> Tolerances | NoiseModel:
    """``"f1:2%,accuracy:0.02"`` -> every case alike; a path to a ``.yaml`` file -> its tables.

    Names follow the quantity vocabulary of :mod:`peftcore.vocab.quantities` (``seen.f1``,
    ``peak_memory_bytes``, ``primary``). GateError on unreadable text; whether a case reports
    the metric is checked by :func:`peftcore.gates.baseline.compare_to_baseline`.
    """
    if not isinstance(text, str) or not text.strip():
        raise GateError("--metric-compare-fail: expected metric:tolerance pairs like f1:2%,accuracy:0.02")
    if text.strip().endswith((".yaml", ".yml")):
        return load_tolerances(Path(text.strip()))
    tolerances: dict[str, Tolerance] = {}
    for item in text.split(","):
        name, sep, value = item.partition(":")
        name = name.strip()
        if not sep or not name:
            raise GateError(f"--metric-compare-fail: {item.strip()!r} is not metric:tolerance (e.g. f1:2%)")
        label = _quantity_label(name, "--metric-compare-fail")
        try:
            tolerance = parse_tolerance(value)
        except ValueError as err:
            raise GateError(f"--metric-compare-fail: {name}: {err}") from None
        if label in tolerances:
            raise GateError(f"--metric-compare-fail: {name} is given twice")
        tolerances[label] = tolerance
    return Tolerances(tolerances)


def _table(raw: Any, where: str) -> dict[str, Tolerance]:
    if not isinstance(raw, Mapping):
        raise GateError(f"{where}: expected a mapping of metric -> tolerance, got {raw!r:.60}")
    table = {}
    for name, value in raw.items():
        try:
            table[_quantity_label(str(name), where)] = parse_tolerance(value)
        except ValueError as err:
            raise GateError(f"{where}: {name}: {err}") from None
    return table


def load_tolerances(path: Path) -> Tolerances | NoiseModel:
    """A tolerance file (see the module docstring), or a statistical one (``mode: statistical``,
    :mod:`peftcore.gates.noise`); GateError naming the file and key."""
    # The spec loader: safe, duplicate keys refused, alias expansion bounded (a file copied from
    # elsewhere cannot hang the session).
    try:
        raw = read_yaml(path)
    except SpecError as err:
        raise GateError(f"--metric-compare-fail: {err}") from None
    if isinstance(raw, Mapping) and raw.get("mode") == "statistical":
        from peftcore.gates.noise import noise_model

        return noise_model(raw, path)
    if isinstance(raw, Mapping) and "mode" in raw:
        raise GateError(f"{path}: key 'mode': expected statistical, got {raw['mode']!r}")
    if not isinstance(raw, Mapping) or set(raw) - {"default", "cases"}:
        raise GateError(f"{path}: expected the keys default and cases (or mode: statistical)")
    cases = raw.get("cases") or {}
    if not isinstance(cases, Mapping):
        raise GateError(f"{path}: key 'cases': expected a mapping of case -> tolerances")
    return Tolerances(
        _table(raw.get("default") or {}, f"{path}: key 'default'"),
        {str(case): _table(table, f"{path}: key 'cases.{case}'") for case, table in cases.items()},
        str(path),
    )


# --------------------------------------------------------------------------- measured from seeds

# Numbers a rerun must reproduce exactly, whatever the seed.
EXACT = ("training.trainable_params", "training.adapter_bytes")
# Peak memory moves with what the allocator kept from earlier cases: relative, with a floor.
MEMORY = "training.peak_memory_bytes"
MEMORY_FLOOR_PERCENT = 20.0
# Metrics of an untrained case reproduce exactly in fp32; this absorbs last-digit noise only
# (BERTScore moves by about 1e-9 between processes), relative to the metric's size (a perplexity
# of 30 carries float32 summation noise of about 1e-6 when the thread count changes).
METRIC_FLOOR = 1e-6


def measured_tolerances(records: Iterable[Mapping[str, Any]], *, margin: float = 1.0) -> Tolerances:
    """Per case, each metric's spread (max - min) over the seeds of ``records``, times ``margin``.

    Every held-out and seen metric a case reports is covered; trainable parameters and adapter
    bytes must match exactly; peak training memory gets its relative spread (at least
    ``MEMORY_FLOOR_PERCENT``). GateError when no case has more than one seed.
    """
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        if record.get("status") == "finished":
            by_case.setdefault(case_name(record), []).append(record)
    if not any(len({case_seed(r) for r in group}) > 1 for group in by_case.values()):
        raise GateError("tolerances need a run of several seeds (pytest benchmarks --seeds 0,1,2)")
    cases: dict[str, dict[str, Tolerance]] = {}
    for name, group in sorted(by_case.items()):
        table: dict[str, Tolerance] = {}
        quantities = [
            Quantity(split, metric)
            for split in ("held_out", "seen")
            for metric in sorted(reported_metrics_of(group, split))
        ]
        for quantity in quantities:
            values = [v for r in group if (v := quantity.value(r)) is not None and math.isfinite(v)]
            if len(values) == len(group):
                spread = (max(values) - min(values)) * margin
                floor = METRIC_FLOOR * max(1.0, *(abs(v) for v in values))
                table[quantity.label] = Tolerance(_round_up(max(spread, floor)), relative=False)
        for label in EXACT:
            if all(parse_quantity(label).value(r) is not None for r in group):
                table[label] = Tolerance(0.0, relative=False)
        memory = [v for r in group if (v := parse_quantity(MEMORY).value(r)) is not None]
        if len(memory) == len(group) and statistics.fmean(memory) > 0:
            percent = 100 * (max(memory) - min(memory)) / statistics.fmean(memory) * margin
            table[MEMORY] = Tolerance(_round_up(max(percent, MEMORY_FLOOR_PERCENT)), relative=True)
        cases[name] = table
    return Tolerances({}, cases, "measured")


def reported_metrics_of(records: Iterable[Mapping[str, Any]], split: str) -> set[str]:
    names: set[str] = set()
    for record in records:
        names |= set(((record.get("metrics") or {}).get(split)) or {})
    return names


def _round_up(value: float, digits: int = 3) -> float:
    """Three significant digits, rounded away from zero (a tolerance is never rounded tighter)."""
    if value == 0:
        return 0.0
    scale = 10 ** (digits - 1 - math.floor(math.log10(abs(value))))
    return math.ceil(value * scale) / scale


def tolerances_yaml(tolerances: Tolerances, header: str) -> str:
    def table(entries: Mapping[str, Tolerance]) -> dict[str, Any]:
        return {k: (f"{t.value:g}%" if t.relative else t.value) for k, t in sorted(entries.items())}

    body = {"default": table(tolerances.default), "cases": {k: table(v) for k, v in tolerances.cases.items()}}
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    return comment + yaml.safe_dump(json.loads(json.dumps(body)), sort_keys=False, width=110)


# --------------------------------------------------------------------------- peftcore tolerances


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="a run of several seeds: a run id or folder")
    parser.add_argument("--results-dir", type=Path, default=Path("reports/runs"))
    parser.add_argument("--out", type=Path, required=True, help="tolerance file to write (YAML)")
    parser.add_argument("--margin", type=float, default=1.0, help="spread multiplier (default: %(default)s)")
    parser.add_argument(
        "--statistical",
        action="store_true",
        help="write the statistical gate's file: each quantity's training noise over the seeds "
        "(docs/gates.md, 'Gates that know noise') instead of fixed spreads",
    )
    parser.add_argument(
        "--confidence", type=float, default=0.95, help="family-wise confidence of the statistical gate"
    )
    parser.add_argument(
        "--earlier",
        type=Path,
        help="with --statistical: a tolerance file of spreads measured earlier, for the cases RUN "
        "has one seed of (their noise is then spread / d2, with --earlier-seeds seeds)",
    )
    parser.add_argument("--earlier-seeds", type=int, default=3, help="seeds the --earlier spreads are over")


def run(args: argparse.Namespace) -> int:
    measured: Run = read_run(resolve_run(args.run, args.results_dir))
    if args.statistical:
        return _write_noise(args, measured)
    tolerances = measured_tolerances(measured.records, margin=args.margin)
    seeds = sorted({case_seed(r) for r in measured.records})
    header = (
        f"Tolerances of --metric-compare-fail, measured by `peftcore tolerances {args.run} --margin "
        f"{args.margin:g}`:\nper case, the spread (max - min) of each metric over training seeds "
        f"{', '.join(map(str, seeds))} of run {measured.run_id}, times the margin.\n"
        f"Exact: {', '.join(EXACT)}; peak training memory: relative, at least {MEMORY_FLOOR_PERCENT:g}%."
    )
    atomic_write_text(args.out, tolerances_yaml(tolerances, header))
    print(f"wrote {args.out}: {len(tolerances.cases)} cases from {len(measured.records)} records")
    return 0


def _write_noise(args: argparse.Namespace, measured: Run) -> int:
    from peftcore.gates.noise import MEMORY_FLOOR_PERCENT, SD_UPPER_CONFIDENCE, measured_noise, noise_yaml

    if not 0 < args.confidence < 1:
        raise GateError(f"--confidence: expected a number in (0, 1), got {args.confidence!r}")
    earlier = None
    if args.earlier is not None:
        spreads = load_tolerances(args.earlier)
        if not isinstance(spreads, Tolerances):
            raise GateError(f"--earlier {args.earlier}: expected a file of spreads, not a statistical one")
        earlier = {
            case: {k: t.value for k, t in table.items() if not t.relative}
            for case, table in spreads.cases.items()
        }
    model = measured_noise(
        measured.records, confidence=args.confidence, earlier=earlier, earlier_seeds=args.earlier_seeds
    )
    seeds = sorted({case_seed(r) for r in measured.records})
    devices = sorted({_cpu_kind((r.get("provenance") or {}).get("device") or {}) for r in measured.records})
    header = (
        f"The statistical gate of --metric-compare-fail, measured by `peftcore tolerances {args.run} "
        f"--statistical`:\nper case, each quantity's training noise: the {SD_UPPER_CONFIDENCE:.0%} upper "
        f"bound of its standard deviation over training seeds {', '.join(map(str, seeds))} of run "
        f"{measured.run_id}.\nExact: trainable parameters and fixed-shape adapters' bytes; peak training "
        f"memory relative, never a regression under {MEMORY_FLOOR_PERCENT:g}%."
    )
    if args.earlier is not None:
        header += (
            f"\nCases with one seed in {measured.run_id}: each metric's noise from its spread over "
            f"{args.earlier_seeds} seeds in {args.earlier} (spread / d2, same upper bound)."
        )
    info = {"run": measured.run_id, "seeds": seeds, "devices": devices}
    if args.earlier is not None:
        info["earlier"] = str(args.earlier)
    atomic_write_text(args.out, noise_yaml(model, header, info))
    print(f"wrote {args.out}: {len(model.cases)} cases from {len(measured.records)} records")
    return 0


def _cpu_kind(device: Mapping[str, Any]) -> str:
    """``AMD EPYC (avx2)``: the device a seed ran on, as far as its record says."""
    name = str(device.get("cpu_model") or device.get("name"))
    return f"{name} ({device['cpu_isa']})" if device.get("cpu_isa") else name
