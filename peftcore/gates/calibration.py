"""How often the statistical gate cries wolf: the gate run on reruns of the same code.

A run of several seeds holds, for each pair of seeds (b, c), one rerun of the whole profile (seed
c) against one baseline (seed b): exactly what ``make test`` does on a new machine, with training
noise at least as large (another seed moves a 5-step fine-tune at least as far as another CPU's
kernels move the same seed). Each ordered pair is one gate decision; the share of pairs with any
quantity regressed is the gate's false-alarm rate per ``make test``.

``python -m peftcore.gates.calibration RUN NOISE.yaml`` prints it; with ``--holdout`` the noise
of each pair is measured from the other seeds only (an out-of-sample check: the shipped file
measured its noise on every seed, the pairs included).
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.gates.baseline import ComparisonRow, compare_statistical
from peftcore.gates.noise import NoiseModel, measured_noise
from peftcore.gates.tolerances import load_tolerances
from peftcore.results.store import newest_by_case, read_run, resolve_run
from peftcore.vocab.record import case_seed


@dataclass(frozen=True)
class GateTrial:
    baseline_seed: int
    current_seed: int
    quantities: int
    regressed: tuple[ComparisonRow, ...]


def as_seed(record: Mapping[str, Any], seed: int) -> dict[str, Any]:
    """``record`` re-keyed to ``seed``, so it is matched with that seed's baseline record."""
    renamed = dict(record)
    renamed["seed"] = seed
    renamed["case_id"] = str(record["case_id"]).rsplit("-seed", 1)[0]
    return renamed


def rerun_trials(
    records: Iterable[Mapping[str, Any]], model: NoiseModel | None = None, *, holdout: bool = False
) -> list[GateTrial]:
    """One gate decision per ordered pair of distinct seeds of ``records`` (see the module
    docstring). ``model`` is the noise to gate with; with ``holdout`` it is measured afresh for
    each pair from the seeds outside it (needs at least four seeds)."""
    by_seed: dict[int, list[Mapping[str, Any]]] = {}
    for record in newest_by_case(records).values():  # one record a case and seed
        by_seed.setdefault(case_seed(record), []).append(record)
    seeds = sorted(by_seed)
    trials = []
    for b, c in itertools.permutations(seeds, 2):
        noise = model
        if holdout or noise is None:
            rest = [r for s in seeds if s not in (b, c) for r in by_seed[s]]
            noise = measured_noise(rest, confidence=model.confidence if model else 0.95)
        baseline = [as_seed(r, 0) for r in by_seed[b]]
        current = [as_seed(r, 0) for r in by_seed[c]]
        result = compare_statistical(current, baseline, noise)
        trials.append(GateTrial(b, c, len(result.rows), tuple(result.regressed)))
    return trials


def describe(trials: Sequence[GateTrial]) -> str:
    alarms = [t for t in trials if t.regressed]
    rows = sum(t.quantities for t in trials)
    flagged = sum(len(t.regressed) for t in trials)
    lines = [
        f"{len(alarms)} of {len(trials)} reruns failed the gate ({len(alarms) / max(len(trials), 1):.1%}); "
        f"{flagged} of {rows} quantities flagged"
    ]
    for trial in alarms:
        for row in trial.regressed:
            lines.append(
                f"  baseline seed {trial.baseline_seed}, rerun seed {trial.current_seed}: {row.case_id} "
                f"{row.quantity} {row.baseline:.4g} -> {row.current:.4g} (Holm p {row.p_value:.2g})"
            )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peftcore.gates.calibration", description=__doc__)
    parser.add_argument("run", help="a run of several seeds: a run id or folder")
    parser.add_argument("noise", type=Path, help="a statistical tolerance file (mode: statistical)")
    parser.add_argument("--results-dir", type=Path, default=Path("reports/runs"))
    parser.add_argument("--holdout", action="store_true", help="measure each pair's noise on the other seeds")
    args = parser.parse_args(argv)
    model = load_tolerances(args.noise)
    if not isinstance(model, NoiseModel):
        parser.error(f"{args.noise} is not a statistical tolerance file (mode: statistical)")
    run = read_run(resolve_run(args.run, args.results_dir))
    finished = [r for r in run.records if r.get("status") == "finished"]
    print(describe(rerun_trials(finished, model, holdout=args.holdout)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
