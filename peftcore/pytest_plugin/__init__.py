"""pytest plugin: a profile of specs becomes one parametrized case per method x model x task.

Registered by the repository's ``conftest.py``. Collection stays cheap and torch-free: this
module imports only the spec loader; models, data and training load inside fixtures.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pytest

from peftcore.errors import PeftcoreError, SpecError
from peftcore.pipeline.session import BenchmarkSession, RerunPolicy, keyword_matcher
from peftcore.pytest_plugin.offline import NetworkGuard, set_offline_env
from peftcore.spec.cases import Case, expand
from peftcore.spec.types import SECTION, ProfileSpec, SpecStore

DEFAULT_PROFILE = "quick"
_STORE = pytest.StashKey[SpecStore | None]()
_CASES = pytest.StashKey[list[Case]]()
_RUN_ID = pytest.StashKey[str]()
_SESSION = pytest.StashKey[BenchmarkSession]()
_GUARD = pytest.StashKey[NetworkGuard]()
_OUTCOME = pytest.StashKey[dict[str, Any]]()  # what the terminal summary reports at the end


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("peftcore", "peftcore benchmark grid")
    group.addoption(
        "--profile", default=None, help=f"profile under specs/profiles (default: {DEFAULT_PROFILE})"
    )
    group.addoption("--specs", default=None, help="spec directory (default: ini peftcore_specs)")
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
    group.addoption("--results-dir", default=None, help="where runs are written (default: reports/runs)")
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
        "--allow-network",
        action="store_true",
        help="let the session reach the network (hub ids, online metrics); off by default",
    )
    parser.addini("peftcore_specs", "spec directory, relative to the rootdir", default="benchmarks/specs")
    parser.addini("peftcore_results", "results directory, relative to the rootdir", default="reports/runs")
    parser.addini("peftcore_profile", "profile used when --profile is not given", default=DEFAULT_PROFILE)


def spec_dir(config: pytest.Config) -> Path:
    value = config.getoption("--specs") or config.getini("peftcore_specs")
    path = Path(value)
    return path if path.is_absolute() else Path(config.rootpath) / path


def results_dir(config: pytest.Config) -> Path:
    value = config.getoption("--results-dir") or config.getini("peftcore_results")
    path = Path(value)
    return path if path.is_absolute() else Path(config.rootpath) / path


def profile_name(config: pytest.Config) -> str:
    return config.getoption("--profile") or config.getini("peftcore_profile") or DEFAULT_PROFILE


def run_id(config: pytest.Config) -> str:
    if _RUN_ID not in config.stash:
        given = config.getoption("--run-id")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        config.stash[_RUN_ID] = given or f"{stamp}-{profile_name(config)}"
    return config.stash[_RUN_ID]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peftcore_case: a benchmark case generated from the specs")
    _seeds(config)  # a malformed --seeds is a usage error, reported before collection
    _tolerances(config)  # likewise --metric-compare-fail
    if not config.getoption("--allow-network"):
        set_offline_env()
        config.stash[_GUARD] = NetworkGuard().install()
    _raise_on_sigterm()
    store = None
    try:
        if (spec_dir(config) / "defaults.yaml").is_file():
            store = SpecStore(spec_dir(config))
    except SpecError:
        store = None  # reported when a case is collected; other tests still run
    config.stash[_STORE] = store
    if store is None:
        return
    # One marker per spec name, so `-m qlora` selects exactly and `--strict-markers` holds.
    for kind in ("methods", "models", "tasks"):
        for name in store.names(kind):
            config.addinivalue_line("markers", f"{name}: {SECTION[kind]} spec {kind}/{name}.yaml")
    profile_file = store.path("profiles", profile_name(config))
    if profile_file.is_file():
        for name in _profile_variants(store, profile_name(config)):
            config.addinivalue_line("markers", f"{name}: method variant in {profile_file.name}")


def _profile_variants(store: SpecStore, name: str) -> list[str]:
    try:
        return list(store.get("profiles", name).variants)
    except SpecError:
        return []


def _seeds(config: pytest.Config) -> list[int] | None:
    text = config.getoption("--seeds")
    if not text:
        return None
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise pytest.UsageError(
            f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}"
        ) from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise pytest.UsageError(f"--seeds: expected distinct integers, got {text!r}")
    return seeds


def planned_cases(config: pytest.Config) -> list[Case]:
    """The session's cases, expanded once from the chosen profile."""
    if _CASES not in config.stash:
        store = config.stash.get(_STORE, None)
        if store is None:
            store = SpecStore(spec_dir(config))  # raises the SpecError that made it None
        overrides: dict[str, Any] = {
            "max_steps": config.getoption("--max-steps"),
            "batch_size": config.getoption("--batch-size"),
            "learning_rate": config.getoption("--learning-rate"),
        }
        sizes = {
            "train": config.getoption("--train-size"),
            "held_out": config.getoption("--held-out-size"),
            "seen": config.getoption("--seen-size"),
        }
        cases = expand(
            store,
            profile_name(config),
            overrides=overrides,
            data_overrides={k: v for k, v in sizes.items() if v is not None},
            seeds=_seeds(config),
        )
        _validate_gates(store.get("profiles", profile_name(config)), cases)
        config.stash[_CASES] = cases
    return config.stash[_CASES]


def _validate_gates(profile: ProfileSpec, cases: list[Case]) -> None:
    """Malformed ``expect:``/``compare:`` blocks fail at collection, before anything trains."""
    import peftcore.gates.checks as gates

    gates.validate_expect(profile.expect, profile.file)
    gates.parse_rules(profile.compare, profile.file)
    for task in {case.task.name: case.task for case in cases}.values():
        gates.validate_expect(task.expect, task.file, task.metrics)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    problem: str | None = None
    try:
        cases = planned_cases(metafunc.config)
    except SpecError as err:
        problem = str(err)
    if problem is not None:
        # One line naming the file and key; no traceback from inside the loader. Raised outside
        # the except block, or pytest prints the SpecError again as the failure's context.
        pytest.fail(f"spec error: {problem}", pytrace=False)
    params = [
        pytest.param(
            case,
            id=case.case_id,
            marks=[
                pytest.mark.peftcore_case,
                getattr(pytest.mark, case.method.name),
                getattr(pytest.mark, case.model.name),
                getattr(pytest.mark, case.task.name),
            ],
        )
        for case in cases
    ]
    metafunc.parametrize("case", params)


@pytest.fixture(scope="session")
def peftcore_run_dir(pytestconfig: pytest.Config) -> Path:
    """This session's run folder: ``<results>/<run-id>/``."""
    return results_dir(pytestconfig) / run_id(pytestconfig)


def _tolerances(config: pytest.Config) -> dict[str, Any] | None:
    text = config.getoption("--metric-compare-fail")
    if not text:
        return None
    from peftcore.gates.baseline import parse_tolerances

    try:
        return dict(parse_tolerances(text))
    except PeftcoreError as err:
        raise pytest.UsageError(f"--metric-compare-fail: {err}") from None


def _raise_on_sigterm() -> None:
    """SIGTERM ends the session like Ctrl-C: the running case is recorded as cancelled."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
        signal.signal(signal.SIGTERM, handler)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """A case whose failure leaves the process unable to run more cases (``stops_session`` on
    the error, e.g. oneDNN after an out-of-memory) ends the session after it, as ``-x`` would."""
    report = yield
    why = getattr(call.excinfo.value, "stops_session", None) if call.excinfo is not None else None
    if isinstance(why, str) and why:
        item.session.shouldstop = why
    return report


def benchmark_session(config: pytest.Config) -> BenchmarkSession:
    if _SESSION not in config.stash:
        rerun = config.getoption("--rerun")
        policy = RerunPolicy()
        if rerun == "*":
            policy = RerunPolicy(everything=True)
        elif rerun:
            policy = RerunPolicy(expression=rerun, matcher=keyword_matcher(rerun))
        store = config.stash.get(_STORE, None) or SpecStore(spec_dir(config))
        config.stash[_SESSION] = BenchmarkSession(
            run_dir=results_dir(config) / run_id(config),
            results_dir=results_dir(config),
            profile=store.get("profiles", profile_name(config)),
            rerun=policy,
        )
    return config.stash[_SESSION]


@pytest.fixture(scope="session")
def peftcore_session(pytestconfig: pytest.Config) -> BenchmarkSession:
    """The session's case bookkeeping: cached results, records, gates."""
    return benchmark_session(pytestconfig)


def _baseline_records(config: pytest.Config) -> list[dict[str, Any]] | None:
    from peftcore.gates.baseline import load_baseline

    path = config.getoption("--metric-baseline")
    if path:
        return load_baseline(path, profile_name(config))
    mapping = getattr(getattr(config, "_benchmarksession", None), "compared_mapping", None) or {}
    records = [
        bench["extra_info"]["peftcore_record"]
        for benches in mapping.values()
        for bench in benches.values()
        if isinstance(bench.get("extra_info"), dict) and "peftcore_record" in bench["extra_info"]
    ]
    return records or None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    outcome: dict[str, Any] = {}
    config.stash[_OUTCOME] = outcome
    guard = config.stash.get(_GUARD, None)
    if guard is not None:
        guard.uninstall()
        if guard.attempts:
            outcome["network"] = guard.attempts
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    bench = config.stash.get(_SESSION, None)
    if bench is None or not bench.records:
        return
    records = [bench.records[k] for k in sorted(bench.records)]
    outcome["records"] = records
    outcome["history_problems"] = bench.history.problems
    tolerances = _tolerances(config)
    if tolerances is not None:
        from peftcore.gates.baseline import compare_to_baseline

        try:
            baseline = _baseline_records(config)
            if baseline is None:
                raise PeftcoreError(
                    "--metric-compare-fail needs a baseline: --metric-baseline PATH or --benchmark-compare"
                )
            result = compare_to_baseline(records, baseline, tolerances)
        except PeftcoreError as err:
            outcome["baseline_error"] = str(err)
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        else:
            outcome["baseline"] = result.format_table()
            if result.failed:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if not config.getoption("--no-report"):
        import peftcore.report.build as report

        try:
            outcome["report"] = report.write_report(
                [bench.run_dir], Path(config.rootpath) / "reports" / bench.run_id
            )
        except PeftcoreError as err:
            outcome["report_error"] = str(err)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    outcome = config.stash.get(_OUTCOME, None)
    if not outcome:
        return
    write = terminalreporter.write_line
    if outcome.get("records"):
        from peftcore.report.build import compact_table

        terminalreporter.section("peftcore cases")
        for line in compact_table(outcome["records"]).splitlines():
            write(line)
    for problem in outcome.get("history_problems", []):
        write(f"earlier record {problem}", yellow=True)
    if "baseline" in outcome:
        terminalreporter.section("peftcore metrics against the baseline")
        for line in outcome["baseline"].splitlines():
            write(line)
    if "baseline_error" in outcome:
        write(f"peftcore baseline comparison: {outcome['baseline_error']}", red=True)
    if "network" in outcome:
        terminalreporter.section("peftcore: network access attempted (the run must be offline)", red=True)
        for attempt in outcome["network"]:
            write(attempt, red=True)
    if "report" in outcome:
        write(f"peftcore report: {outcome['report']}", bold=True)
    if "report_error" in outcome:
        write(f"peftcore report not written: {outcome['report_error']}", red=True)
