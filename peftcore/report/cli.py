"""``peftcore report``: summary tables and one self-contained HTML page from stored case records.

    peftcore report                  the newest run under reports/runs
    peftcore report RUN              a run id (under --results-dir) or a run folder
    peftcore report RUN_A RUN_B      RUN_B's report, compared case by case with RUN_A

Writes ``reports/<run-id>/`` (or ``--out``): ``summary.csv`` (one row per case),
``summary.md`` (tables to paste into a README), ``report.html`` (plots embedded as PNG) and,
given two runs, ``comparison.csv``. "Newest" is the run store's: the run whose newest record
finished last (:func:`peftcore.results.store.list_runs`). Errors are ReportError, which
:mod:`peftcore.cli` prints as one line with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from peftcore.report.build import (
    DEFAULT_RESULTS,
    ReportError,
    build_report,
    check_run_count,
    newest_run,
    resolve_run,
)

DEFAULT_REPORTS = Path("reports")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "runs",
        nargs="*",
        metavar="RUN",
        help="a run id under --results-dir or a run folder (default: the newest run); with two runs, "
        "the report is of the second, compared case by case with the first",
    )
    parser.add_argument(
        "--results-dir",
        default=str(DEFAULT_RESULTS),
        help="where runs are looked up: a folder or an fsspec URL such as s3://bucket/runs "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: reports/<run-id> or reports/<new>-vs-<old>)",
    )


def default_out(run_dirs: Sequence[Path]) -> Path:
    """``reports/<run-id>``, or ``reports/<new>-vs-<old>`` for two runs."""
    names = [Path(d).name for d in run_dirs]
    return DEFAULT_REPORTS / (names[-1] if len(names) == 1 else f"{names[-1]}-vs-{names[0]}")


def local_results(location: str) -> Path:
    """The local folder of a results location; a URL's records are pulled into its mirror first."""
    from peftcore.results.remote import LocationError, RemoteResults, split_location

    url, local = split_location(location)
    if url is not None:
        try:
            RemoteResults(url, local).pull()
        except LocationError as err:
            raise ReportError(str(err)) from None
    return local


def run(args: argparse.Namespace) -> int:
    """Build the report, say what was written, and warn about record files that could not be read."""
    if args.runs:  # none: the newest run
        check_run_count(args.runs)  # before any lookup, so that three runs is not "no run 'c'"
    results_dir = local_results(str(args.results_dir))
    run_dirs = [resolve_run(r, results_dir) for r in args.runs] or [newest_run(results_dir)]
    written = build_report(run_dirs, args.out or default_out(run_dirs))
    records = written.run.records
    failed = sum(r["status"] != "finished" for r in records)
    print(
        f"wrote {written.out_dir}/: {', '.join(written.files)} "
        f"({len(records)} cases of {written.run.run_id}: {len(records) - failed} finished, {failed} not)"
    )
    grid = written.run.grid
    if grid is not None and (grid.missing or grid.shards_not_started):
        not_started = (
            f"; shard(s) not started: {', '.join(grid.shards_not_started)}" if grid.shards_not_started else ""
        )
        print(
            f"missing {len(grid.missing)} of the {len(grid.expected)} cases of the grid{not_started}: "
            + ", ".join(grid.missing)
        )
    if written.comparison is not None and written.reference is not None:
        c = written.comparison
        print(
            f"compared with {written.reference.run_id}: {len(c.matched_cases)} cases in both, "
            f"{len(c.new_cases)} only in {written.run.run_id}, "
            f"{len(c.missing_cases)} only in {written.reference.run_id}"
        )
    for run_ in (written.reference, written.run):
        if run_ is not None and run_.problems:
            print(
                f"warning: {len(run_.problems)} record file(s) of {run_.run_id} could not be read:",
                file=sys.stderr,
            )
            for problem in run_.problems:
                print(f"  {problem}", file=sys.stderr)
    return 0
