"""``peftcore baseline``: the baseline of one seed, cut from a pytest-benchmark JSON file of a run
of several seeds (``pytest benchmarks --seeds 0,1,2,3 --benchmark-json=FILE``).

One run of several seeds then gives both what the statistical gate compares against (one seed's
records, with their per-example scores) and the noise it compares with (every seed:
``peftcore tolerances RUN --statistical``), so the two describe the same code on the same machine.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from peftcore.gates.tolerances import GateError
from peftcore.results.record import case_seed
from peftcore.storage import atomic_write_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path, help="pytest-benchmark JSON file of a run of several seeds")
    parser.add_argument("--seed", type=int, default=0, help="the seed to keep (default: %(default)s)")
    parser.add_argument("--out", type=Path, required=True, help="baseline file to write (JSON)")


def run(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.source.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise GateError(f"{args.source}: not a readable JSON file ({err})") from None
    benchmarks = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benchmarks, list):
        raise GateError(f"{args.source}: not a pytest-benchmark file (no 'benchmarks' list)")
    kept = []
    for bench in benchmarks:
        record = ((bench or {}).get("extra_info") or {}).get("peftcore_record")
        if isinstance(record, dict) and case_seed(record) == args.seed:
            kept.append(bench)
    if not kept:
        raise GateError(f"{args.source}: no peftcore case of seed {args.seed}")
    atomic_write_text(args.out, json.dumps({**data, "benchmarks": kept}, indent=1) + "\n")
    print(f"wrote {args.out}: {len(kept)} cases of seed {args.seed}")
    return 0
