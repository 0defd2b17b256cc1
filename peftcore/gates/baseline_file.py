"""``peftcore baseline``: the baseline of one seed, cut from a run of several seeds (a run id or
folder, or the pytest-benchmark JSON file of its session: ``--benchmark-json=FILE``).

One run of several seeds then gives both what the statistical gate compares against (one seed's
records, with their per-example scores) and the noise it compares with (every seed:
``peftcore tolerances RUN --statistical``), so the two describe the same code on the same machine.
The file written has pytest-benchmark's layout (each record in a benchmark's
``extra_info["peftcore_record"]``), which ``--metric-baseline`` reads; from a run folder it holds
the records only, without timing statistics, so it is not for ``--benchmark-compare``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from peftcore.errors import GateError
from peftcore.results.store import newest_by_case, read_run, resolve_run
from peftcore.storage import atomic_write_text
from peftcore.vocab.record import case_seed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source", help="a run of several seeds (run id or folder), or its pytest-benchmark JSON file"
    )
    parser.add_argument("--seed", type=int, default=0, help="the seed to keep (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="baseline file to write (JSON)")
    parser.add_argument("--results-dir", type=Path, default=Path("reports/runs"))


def _from_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateError(f"{path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise GateError(f"{path}: not a pytest-benchmark file (no 'benchmarks' list)")
    return data


def _from_run(source: str, results_dir: Path) -> dict[str, Any]:
    run = read_run(resolve_run(source, results_dir))
    if run.problems:
        raise GateError(f"run {run.run_id}: {run.problems[0]}")
    newest = newest_by_case(run.records).values()  # one record a case and seed (a resumed run adopts)
    benchmarks = [
        {"name": f"test_case[{r['case_id']}]", "extra_info": {"peftcore_record": r}}
        for r in sorted(newest, key=lambda r: str(r["case_id"]))
    ]
    return {"peftcore_baseline": f"records of run {run.run_id}", "benchmarks": benchmarks}


def run(args: argparse.Namespace) -> int:
    path = Path(args.source)
    data = _from_json(path) if path.is_file() else _from_run(args.source, args.results_dir)
    kept = []
    for bench in data["benchmarks"]:
        record = ((bench or {}).get("extra_info") or {}).get("peftcore_record")
        if isinstance(record, dict) and case_seed(record) == args.seed:
            kept.append(bench)
    if not kept:
        raise GateError(f"{args.source}: no peftcore case of seed {args.seed}")
    atomic_write_text(args.out, json.dumps({**data, "benchmarks": kept}, indent=1) + "\n")
    print(f"wrote {args.out}: {len(kept)} cases of seed {args.seed}")
    return 0
