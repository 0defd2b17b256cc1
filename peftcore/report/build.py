"""Building a report folder: read the runs, render every file in memory, publish the folder whole.

Runs are looked up and read through the run store (:mod:`peftcore.results.store`); its failures
come out of here as :class:`ReportError`, as do the report's own (nothing readable, two runs
without a common case, an output folder that is not a report). The folder is built next to its
destination and renamed into place, so a failure leaves the previous report whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from peftcore.errors import PeftcoreError
from peftcore.gates.baseline import ComparisonResult, compare_records
from peftcore.report.explorer import explorer_data
from peftcore.report.explorer_page import explorer_html
from peftcore.report.html import report_html
from peftcore.report.off_task import off_task_plots
from peftcore.report.plots import draw_plots
from peftcore.report.tables import comparison_csv, summary_csv, summary_md
from peftcore.report.tuning import tuning_plots
from peftcore.results import store
from peftcore.results.frame import records_frame
from peftcore.results.store import Run, RunError
from peftcore.results.variants import with_variants
from peftcore.storage import atomic_folder, atomic_write_bytes
from peftcore.vocab.record import is_search_only

DEFAULT_RESULTS = Path("reports/runs")
MARKER = ".peftcore-report"  # only a folder carrying it is ever replaced
_MARKER_TEXT = b"written by peftcore report; the folder is replaced as a whole\n"


class ReportError(PeftcoreError):
    """A report cannot be built: no such run, nothing readable, or the output is not ours."""


# --------------------------------------------------------------------------- runs


@contextlib.contextmanager
def _as_report_error() -> Iterator[None]:
    """The run store's RunError as a ReportError with the same one-line message."""
    try:
        yield
    except RunError as err:
        raise ReportError(str(err)) from None


def resolve_run(name: str | Path, results_dir: Path = DEFAULT_RESULTS) -> Path:
    """A run id under ``results_dir`` or a path to a run folder; ReportError when neither."""
    with _as_report_error():
        return store.resolve_run(name, results_dir)


def newest_run(results_dir: Path = DEFAULT_RESULTS) -> Path:
    """The newest run under ``results_dir`` by the store's definition (its newest record's
    ``finished_at``, then run id); ReportError when there is none."""
    with _as_report_error():
        return store.newest_run(results_dir)


def read_run(run_dir: Path) -> Run:
    """The usable records of a run; unreadable record files are kept as problems, not fatal.
    ReportError when the folder is missing, is not a run, or has no readable record. A search's
    trials (scored on the tuning split) and default runs (beside its tuned runs) are set apart
    in ``search``: only the Tuning section reads them, no table compares them."""
    with _as_report_error():
        run = store.read_run(run_dir)
    return dataclasses.replace(
        run,
        records=tuple(r for r in run.records if not is_search_only(r)),
        search=tuple(r for r in run.records if is_search_only(r)),
    )


def check_run_count(runs: Sequence[object]) -> None:
    """ReportError unless there is one run, or two (reference, then new)."""
    if not 1 <= len(runs) <= 2:
        raise ReportError(f"give one run, or two to compare (reference, then new); got {len(runs)}")


# --------------------------------------------------------------------------- building


@dataclass(frozen=True)
class Written:
    """A published report: its folder, the run it reports, the run it compares with, its files."""

    out_dir: Path
    run: Run
    reference: Run | None
    comparison: ComparisonResult | None
    files: tuple[str, ...]


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Written:
    """Read the runs (one, or reference then new), render every file in memory, then publish the
    folder in one rename. ReportError when a run cannot be read, two runs share no case, or
    ``out_dir`` cannot be (or must not be) replaced."""
    check_run_count(run_dirs)
    runs = [read_run(Path(d)) for d in run_dirs]
    run, reference = runs[-1], (runs[0] if len(runs) == 2 else None)
    comparison = None
    if reference is not None:
        comparison = compare_records(run.records, reference.records)
        if not comparison.matched_cases:
            raise ReportError(
                f"runs {reference.run_id} and {run.run_id} have no case in common (same method, model, task "
                "and seed), so there is nothing to compare"
            )
    files = {
        "summary.csv": summary_csv(with_variants(run.records)),  # one row per deployment variant too
        "summary.md": summary_md(run, reference, comparison),
        "report.html": report_html(
            run,
            {**draw_plots(run), "off_task": off_task_plots(run), "tuning": tuning_plots(run)},
            reference,
            comparison,
            explorer=explorer_html(explorer_data(records_frame(run.records), run.records)),
        ),
    }
    if reference is not None and comparison is not None:
        files["comparison.csv"] = comparison_csv(comparison, reference, run)
    out = Path(out_dir)
    publish_dir(out, {name: text.encode("utf-8") for name, text in files.items()})
    return Written(out, run, reference, comparison, tuple(files))


def write_report(run_dirs: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Build the report of ``run_dirs`` (one run, or reference then new) into ``out_dir``."""
    return build_report(run_dirs, out_dir).out_dir


# --------------------------------------------------------------------------- publishing


def publish_dir(out_dir: Path, files: Mapping[str, bytes]) -> None:
    """Replace ``out_dir`` with a folder holding ``files`` (and the marker), all at once.

    The new folder is written (and fsynced) next to the destination and swapped in by
    :func:`peftcore.storage.atomic_folder` (the old one is put back if that fails). Only an
    empty folder or one that carries the report marker is ever replaced, so ``--out`` cannot
    wipe a run or a source folder. ReportError on refusal or on any failure to write.
    """
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise ReportError(f"{out_dir} exists and is not a folder; choose another --out")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MARKER).is_file():
        raise ReportError(f"refusing to replace {out_dir}: it is not a peftcore report folder (no {MARKER})")
    try:
        with atomic_folder(out_dir) as tmp:
            for name, data in {**files, MARKER: _MARKER_TEXT}.items():
                atomic_write_bytes(tmp / name, data)
                os.chmod(tmp / name, 0o644)  # temp files are created private; a report is meant to be read
            os.chmod(tmp, 0o755)
        _fsync_dir(out_dir.parent)
    except OSError as err:
        raise ReportError(f"could not write the report {out_dir}: {_innermost_reason(err)}") from None


def _innermost_reason(err: OSError) -> str:
    """Why the system call failed: the storage helpers re-raise it with a path in front."""
    while isinstance(err.__cause__, OSError):
        err = err.__cause__
    return err.strerror or str(err)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
