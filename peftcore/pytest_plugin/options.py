"""The plugin's command-line options and ini keys, and what they resolve to."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from peftcore.errors import PeftcoreError
from peftcore.results.manifest import Shard, parse_shard
from peftcore.spec import DEFAULT_PROFILE, MAX_SEED

if TYPE_CHECKING:
    from peftcore.gates.noise import NoiseModel
    from peftcore.gates.tolerances import Tolerances

_RUN_ID = pytest.StashKey[str]()


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("peftcore", "peftcore benchmark grid")
    group.addoption(
        "--profile", default=None, help=f"profile under specs/profiles (default: {DEFAULT_PROFILE})"
    )
    group.addoption(
        "--specs",
        default=None,
        help="spec directory, its grid collected whatever paths are given (default: ini peftcore_specs)",
    )
    group.addoption("--max-steps", type=int, default=None, help="override every case's training steps")
    group.addoption("--batch-size", type=int, default=None, help="override every case's batch size")
    group.addoption("--learning-rate", type=float, default=None, help="override every case's learning rate")
    group.addoption("--train-size", type=int, default=None, help="override the train split size")
    group.addoption("--held-out-size", type=int, default=None, help="override the held-out split size")
    group.addoption("--seen-size", type=int, default=None, help="override the seen split size")
    group.addoption(
        "--seeds",
        default=None,
        help="comma-separated training seeds, e.g. 0,1,2: each case runs once per seed",
    )
    group.addoption("--run-id", default=None, help="name of this run's folder under the results directory")
    group.addoption(
        "--results-dir",
        default=None,
        help="where runs are written: a folder, or an fsspec URL such as s3://bucket/runs "
        "(default: reports/runs)",
    )
    group.addoption(
        "--shard",
        default=None,
        metavar="K/N",
        help="run only part K of N of the selected cases (a deterministic, balanced split by case); "
        "every shard needs the same --run-id and results directory",
    )
    group.addoption(
        "--devices",
        default=None,
        metavar="IDS",
        help="GPUs to use, e.g. 0,1,2,3 (default: CUDA_VISIBLE_DEVICES); with pytest-xdist's -n they are "
        "split across the workers",
    )
    group.addoption(
        "--rerun",
        nargs="?",
        const="*",
        default=None,
        metavar="EXPR",
        help="run cases again even when an earlier run has their result: all, or those matching a -k EXPR",
    )
    group.addoption(
        "--metric-baseline",
        default=None,
        metavar="PATH",
        help="baseline for --metric-compare-fail: a pytest-benchmark JSON file or a run folder "
        "(default: the file --benchmark-compare loads)",
    )
    group.addoption(
        "--metric-compare-fail",
        default=None,
        metavar="TOLERANCES",
        help="fail when a metric regresses against the baseline beyond tolerance, e.g. f1:2%%,accuracy:0.02",
    )
    group.addoption("--no-report", action="store_true", help="do not write reports/<run-id>/ at the end")
    group.addoption(
        "--report-dir",
        default=None,
        help="where the session's report folder <run-id>/ goes (default: next to the results directory)",
    )
    group.addoption(
        "--allow-network",
        action="store_true",
        help="let the session reach the network (hub ids, online metrics); off by default",
    )
    parser.addini("peftcore_specs", "spec directory, relative to the rootdir", default="benchmarks/specs")
    parser.addini("peftcore_results", "results directory, relative to the rootdir", default="reports/runs")
    parser.addini("peftcore_profile", "profile used when --profile is not given", default=DEFAULT_PROFILE)


def _under_root(config: pytest.Config, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else Path(config.rootpath) / path


def spec_dir(config: pytest.Config) -> Path:
    return _under_root(config, config.getoption("--specs") or config.getini("peftcore_specs"))


def results_location(config: pytest.Config) -> tuple[str | None, Path]:
    """``(url, local folder)``: a path or ``file://`` URL is its own folder (url None); another
    fsspec URL (``s3://bucket/runs``) is mirrored in a local folder (:mod:`peftcore.results.remote`)."""
    from peftcore.results.remote import split_location

    url, local = split_location(config.getoption("--results-dir") or config.getini("peftcore_results"))
    return url, local if url is not None else _under_root(config, str(local))


def check_results_location(config: pytest.Config) -> None:
    """A results URL whose file system fsspec does not know (or lacks, like s3fs) is a usage error."""
    url, mirror = results_location(config)
    if url is None:
        return
    from peftcore.results.remote import LocationError, RemoteResults

    try:
        RemoteResults(url, mirror)
    except LocationError as err:
        raise pytest.UsageError(f"--results-dir: {err}") from None


def check_writable(config: pytest.Config) -> None:
    """The local results folder (a results URL's mirror) and the report folder must be writable
    before anything runs: otherwise the first record or manifest written fails as 80 lines of
    INTERNALERROR. Nothing is created here (``--collect-only``, ``--help`` and ``--markers``
    write nothing, so are not checked)."""
    writes_nothing = ("collectonly", "help", "markers")
    if any(getattr(config.option, name, False) for name in writes_nothing):
        return
    given = config.getoption("--results-dir")
    option = "--results-dir" if given else "--results-dir (not given: ini peftcore_results)"
    _refuse_unwritable(results_location(config)[1], option, "runs")
    if not config.getoption("--no-report"):
        option = "--report-dir" if config.getoption("--report-dir") else "--report-dir (not given)"
        _refuse_unwritable(report_dir(config).parent, option, "the report")


def _refuse_unwritable(folder: Path, option: str, what: str) -> None:
    """UsageError when ``folder`` (or, where it does not exist yet, the nearest folder above it that
    does) cannot take a file: a file in the way, no write permission, a read-only file system."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise pytest.UsageError(
            f"{option}: cannot write {what} to {folder}: {existing} is a file, not a folder"
        )
    import tempfile

    try:  # a real write: permission bits say nothing of a read-only mount, nor of root
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise pytest.UsageError(
            f"{option}: cannot write {what} to {folder}: {existing} is not writable ({err.strerror})"
        ) from None


def results_dir(config: pytest.Config) -> Path:
    """The local folder runs are written to (the mirror of a results URL)."""
    return results_location(config)[1]


def profile_name(config: pytest.Config) -> str:
    return config.getoption("--profile") or config.getini("peftcore_profile") or DEFAULT_PROFILE


def run_id(config: pytest.Config) -> str:
    """``--run-id``, or a time stamp and the profile; a folder name under the results directory."""
    if _RUN_ID not in config.stash:
        workerinput = getattr(config, "workerinput", None)  # an xdist worker: the controller's id
        if workerinput is not None and workerinput.get("peftcore_run_id"):
            config.stash[_RUN_ID] = str(workerinput["peftcore_run_id"])
            return config.stash[_RUN_ID]
        given = config.getoption("--run-id")
        if given is not None and (
            not given or any(c in given for c in "/\\") or given.startswith(".") or given != given.strip()
        ):
            raise pytest.UsageError(
                f"--run-id: expected a folder name (no '/', not starting with '.'), got {given!r}"
            )
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        config.stash[_RUN_ID] = given or f"{stamp}-{profile_name(config)}"
    return config.stash[_RUN_ID]


def report_dir(config: pytest.Config) -> Path:
    """The session's report folder: ``<report-dir or the results directory's parent>/<run-id>``
    (``reports/<run-id>`` by default, next to ``reports/runs``)."""
    given = config.getoption("--report-dir")
    url, local = results_location(config)
    if given:
        parent = _under_root(config, given)
    else:  # next to the results folder; for a results URL, reports/ under the rootdir
        parent = local.parent if url is None else Path(config.rootpath) / "reports"
    return parent / run_id(config)


def shard(config: pytest.Config) -> Shard | None:
    """``--shard K/N``, read; a malformed value, or a shard without ``--run-id`` (each job would
    name its own run folder), is a usage error."""
    text = config.getoption("--shard")
    if text is None:
        return None
    try:
        found = parse_shard(text)
    except ValueError as err:
        raise pytest.UsageError(f"--shard: {err}") from None
    if not config.getoption("--run-id"):
        raise pytest.UsageError("--shard needs --run-id: every shard must write into the same run folder")
    return found


def rerun_expression(config: pytest.Config) -> str | None:
    """``--rerun=EXPR``, checked with pytest's own -k grammar (a usage error if it does not parse)."""
    text = config.getoption("--rerun")
    if text and text != "*":
        from _pytest.mark.expression import Expression

        try:
            Expression.compile(text)
        except SyntaxError as err:
            raise pytest.UsageError(f"--rerun: {text!r} is not a -k expression: {err.msg}") from None
    return text


def seeds(config: pytest.Config) -> list[int] | None:
    """``--seeds``, read; a malformed value is a usage error."""
    text = config.getoption("--seeds")
    if not text:
        return None
    try:
        found = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(
            f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}"
        ) from None
    if not found or len(set(found)) != len(found):
        raise pytest.UsageError(f"--seeds: expected distinct integers, got {text!r}")
    outside = [seed for seed in found if not 0 <= seed <= MAX_SEED]
    if outside:
        # Caught here, not by the random generators after the model has loaded (numpy takes
        # 0 to 2**32 - 1, as training.seed does).
        raise pytest.UsageError(
            f"--seeds: expected integers from 0 to {MAX_SEED}, got {outside[0]} in {text!r}"
        )
    return found


def tolerances(config: pytest.Config) -> Tolerances | NoiseModel | None:
    """``--metric-compare-fail``, read (its per-case tables too); a malformed value is a usage
    error."""
    text = config.getoption("--metric-compare-fail")
    if not text:
        return None
    from peftcore.gates.tolerances import parse_tolerances

    try:
        return parse_tolerances(text)  # a Tolerances, never dict(): that keeps only its default
    except PeftcoreError as err:
        message = str(err)
        if not message.startswith("--metric-compare-fail"):
            message = f"--metric-compare-fail: {message}"
        raise pytest.UsageError(message) from None


def overrides(config: pytest.Config) -> tuple[dict[str, Any], dict[str, Any]]:
    """The command line's training budget and data sizes (only what was given)."""
    budget = {
        "max_steps": config.getoption("--max-steps"),
        "batch_size": config.getoption("--batch-size"),
        "learning_rate": config.getoption("--learning-rate"),
    }
    sizes = {
        "train": config.getoption("--train-size"),
        "held_out": config.getoption("--held-out-size"),
        "seen": config.getoption("--seen-size"),
    }
    return budget, {k: v for k, v in sizes.items() if v is not None}
