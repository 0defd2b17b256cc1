"""The plugin's hooks: the grid collected from the specs, offline guard, gates and summary at the end.

Collection stays cheap and torch-free: only the spec loader runs; models, data and training
load inside fixtures. The plugin is active in a project whose spec directory exists (ini
``peftcore_specs``, default ``benchmarks/specs``, or ``--specs``); elsewhere it only adds its
options, so installing peftcore changes no other project's test runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from peftcore.deploy.llama_tools import require_tools
from peftcore.errors import AssetError, GateError, PeftcoreError, SpecError
from peftcore.models.checkpoints import check_available
from peftcore.offline import NetworkGuard, set_offline_env
from peftcore.pytest_plugin import options, workers
from peftcore.pytest_plugin.state import SESSION, SPEC_STORE, remote_results, spec_store
from peftcore.spec import SECTION, SpecStore
from peftcore.spec.cases import Case, expand
from peftcore.vocab.record import Record, RecordError, check_record
from peftcore.vocab.variants import needs_llama_quantize

_CASES = pytest.StashKey[list[Case]]()
_GUARD = pytest.StashKey[NetworkGuard]()
_OUTCOME = pytest.StashKey[dict[str, Any]]()  # what the terminal summary reports at the end
_COMPARED = pytest.StashKey[list[dict[str, Any]]]()  # records of --benchmark-compare's file
_BASELINE = pytest.StashKey[list[Record]]()  # records of --metric-baseline
_CONTROLLER = "peftcore-xdist-controller"  # the plugin that gathers the workers' records


def pytest_addoption(parser: pytest.Parser) -> None:
    options.add_options(parser)


def active(config: pytest.Config) -> bool:
    """Whether this project has a spec directory (else the plugin stays out of the way)."""
    return (options.spec_dir(config) / "defaults.yaml").is_file()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "peftcore_case: a benchmark case generated from the specs")
    workers.take_share(config)  # an xdist worker's devices and cores, before torch loads
    if workers.is_controller(config):
        config.pluginmanager.register(workers.Controller(), _CONTROLLER)
    # Malformed options are usage errors, reported before collection: --seeds,
    # --metric-compare-fail, --run-id, --rerun.
    options.seeds(config)
    options.tolerances(config)
    options.run_id(config)
    options.rerun_expression(config)
    options.shard(config)
    options.check_results_location(config)
    _load_baseline(config)
    if not active(config):
        return
    options.check_writable(config)  # a benchmark session writes records: a usage error before it starts
    _collect_the_named_specs(config)
    if not config.getoption("--allow-network"):
        set_offline_env()
        config.stash[_GUARD] = NetworkGuard().install()
    _raise_on_sigterm()
    store = None
    try:
        store = SpecStore(options.spec_dir(config))
    except SpecError:
        store = None  # reported when a case is collected; other tests still run
    config.stash[SPEC_STORE] = store
    if store is None:
        return
    # One marker per spec name, so `-m qlora` selects exactly and `--strict-markers` holds.
    for kind in ("methods", "models", "tasks"):
        for name in store.names(kind):
            config.addinivalue_line("markers", f"{name}: {SECTION[kind]} spec {kind}/{name}.yaml")
    profile_file = store.path("profiles", options.profile_name(config))
    if profile_file.is_file():
        for name in _profile_variants(store, options.profile_name(config)):
            config.addinivalue_line("markers", f"{name}: method variant in {profile_file.name}")


def _collect_the_named_specs(config: pytest.Config) -> None:
    """``--specs DIR`` on the command line collects the grid from DIR whatever paths pytest is
    given (``pytest benchmarks --specs other``): pytest collects only under its paths, and a
    ``defaults.yaml`` there that is not DIR's is not the grid. DIR is added to the paths unless
    one of them already holds it."""
    if config.getoption("--specs") is None:
        return
    spec_dir = options.spec_dir(config).resolve()
    invocation = Path(config.invocation_params.dir)
    given = [(invocation / arg.split("::")[0]).resolve() for arg in config.args]
    if not any(spec_dir == path or spec_dir.is_relative_to(path) for path in given):
        config.args.append(str(spec_dir))


def _profile_variants(store: SpecStore, name: str) -> list[str]:
    try:
        return list(store.get("profiles", name).variants)
    except SpecError:
        return []


# --------------------------------------------------------------------------- the grid


class SpecGrid(pytest.Module):
    """The spec directory's ``defaults.yaml``, collected as a test module: its one test,
    :func:`peftcore.pytest_plugin.grid.test_case`, becomes one case per profile cell."""

    def _getobj(self) -> Any:
        from peftcore.pytest_plugin import grid

        return grid


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.name != "defaults.yaml" or not active(parent.config):
        return None
    if file_path.resolve() != (options.spec_dir(parent.config) / "defaults.yaml").resolve():
        return None
    grid: pytest.Collector = SpecGrid.from_parent(parent, path=file_path)
    return grid


def planned_cases(config: pytest.Config) -> list[Case]:
    """The session's cases, expanded once from the chosen profile."""
    if _CASES not in config.stash:
        store = spec_store(config)
        budget, sizes = options.overrides(config)
        cases = expand(
            store,
            options.profile_name(config),
            overrides=budget,
            data_overrides=sizes,
            seeds=options.seeds(config),
        )
        offline = not config.getoption("--allow-network")
        for model in {case.model.name: case.model for case in cases}.values():
            check_available(model, offline=offline)  # AssetError: one line at collection
        if any(case.deploy.variants for case in cases):
            # K-quant variants need llama.cpp's tools: fail now, not after the cases have trained.
            profile = store.get("profiles", options.profile_name(config))
            require_tools(needs_llama_quantize(profile.deploy.variants), profile.file, "deploy.variants")
        config.stash[_CASES] = cases
    return config.stash[_CASES]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    problem: str | None = None
    try:
        cases = planned_cases(metafunc.config)
    except SpecError as err:
        problem = str(err)
    except AssetError as err:
        problem = f"{err} (a model of this profile)"
    if problem is not None:
        # One line naming the file and key; no traceback from inside the loader. Raised outside
        # the except block, or pytest prints the SpecError again as the failure's context.
        pytest.fail(f"spec error: {problem}", pytrace=False)
    # Under pytest-xdist, `--dist loadgroup` keeps the cases of one base-model variant on one worker.
    xdist = metafunc.config.pluginmanager.hasplugin("xdist")
    params = [
        pytest.param(
            case,
            id=case.case_id,
            marks=[
                pytest.mark.peftcore_case,
                getattr(pytest.mark, case.method.name),
                getattr(pytest.mark, case.model.name),
                getattr(pytest.mark, case.task.name),
                *([pytest.mark.xdist_group("-".join(map(str, case.variant_key)))] if xdist else []),
            ],
        )
        for case in cases
    ]
    metafunc.parametrize("case", params)


def _case_of(item: pytest.Item) -> Case | None:
    callspec = getattr(item, "callspec", None)
    case = callspec.params.get("case") if callspec is not None else None
    return case if isinstance(case, Case) else None


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected: shards split what is selected
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    """``--shard K/N`` keeps this shard's cases (other tests run in shard 1); every session that
    will run cases writes the grid manifest of its run folder."""
    from peftcore.pytest_plugin.shard import partition
    from peftcore.results.manifest import WHOLE, write_manifest

    grid = [case for item in items if (case := _case_of(item)) is not None]
    if not grid:
        return
    shard = options.shard(config) or WHOLE
    mine = partition(grid, shard)
    if shard.count > 1:
        keep: list[pytest.Item] = []
        drop: list[pytest.Item] = []
        for item in items:
            case = _case_of(item)
            ours = case.case_id in mine if case is not None else shard.index == 1
            (keep if ours else drop).append(item)
        if drop:
            config.hook.pytest_deselected(items=drop)
            items[:] = keep
    if not config.option.collectonly:
        run_dir = options.results_dir(config) / options.run_id(config)
        manifest = write_manifest(run_dir, shard, [case.case_id for case in grid], sorted(mine))
        remote = remote_results(config)
        if remote is not None:
            remote.push_file(manifest)


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


# --------------------------------------------------------------------------- the end of the session


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """pytest-xdist, on the controller, before a worker starts: every worker writes into the
    controller's run folder."""
    node.workerinput["peftcore_run_id"] = options.run_id(node.config)


@pytest.hookimpl(optionalhook=True)
def pytest_benchmark_compare_machine_info(
    config: pytest.Config, benchmarksession: Any, machine_info: Any, compared_benchmark: Any
) -> None:
    """pytest-benchmark hands over each file ``--benchmark-compare`` loads: keep its records as
    the default baseline of ``--metric-compare-fail``."""
    found = config.stash.setdefault(_COMPARED, [])
    for bench in compared_benchmark.get("benchmarks") or ():
        extra = bench.get("extra_info") if isinstance(bench, dict) else None
        if isinstance(extra, dict) and isinstance(extra.get("peftcore_record"), dict):
            found.append(extra["peftcore_record"])


def _load_baseline(config: pytest.Config) -> None:
    """``--metric-baseline`` read at start-up: a missing or unusable file is a usage error before
    anything runs, not a message after every case has."""
    path = config.getoption("--metric-baseline")
    if not path:
        return
    from peftcore.gates.baseline import load_baseline

    try:
        config.stash[_BASELINE] = load_baseline(path, options.profile_name(config))
    except GateError as err:
        raise pytest.UsageError(f"--metric-baseline: {err}") from None


def _baseline_records(config: pytest.Config) -> list[Record] | None:
    if _BASELINE in config.stash:
        return config.stash[_BASELINE]
    try:
        found = [check_record(r, "--benchmark-compare") for r in config.stash.get(_COMPARED, [])]
    except RecordError as err:
        raise GateError(f"{err}; save a new baseline with --benchmark-save") from None
    return found or None


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
    if workers.is_worker(config):
        return  # the controller gates, reports and summarizes what every worker ran
    controller = config.pluginmanager.get_plugin(_CONTROLLER)
    bench = config.stash.get(SESSION, None)
    if controller is not None:
        found = controller.records
        run_dir = options.results_dir(config) / options.run_id(config)
    elif bench is not None:
        found, run_dir = bench.records, bench.run_dir
        outcome["history_problems"] = bench.history.problems
    else:
        return
    if not found:
        return
    records = [found[k] for k in sorted(found)]
    outcome["records"] = records
    if controller is not None:
        _check_rules_between_workers(config, records, outcome)
        if outcome.get("rules"):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
    tolerances = options.tolerances(config)
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
        from peftcore.report import write_report

        remote = remote_results(config)
        if remote is not None:
            remote.pull()  # the report holds what every shard wrote so far

        try:
            outcome["report"] = write_report([run_dir], options.report_dir(config))
        except PeftcoreError as err:
            outcome["report_error"] = str(err)


def _check_rules_between_workers(
    config: pytest.Config, records: list[Record], outcome: dict[str, Any]
) -> None:
    """The profile's ``compare:`` rules over the records of every worker: a worker checks them
    only against the cases it ran itself."""
    from peftcore import gates

    store = config.stash.get(SPEC_STORE, None)
    if store is None:
        return
    try:
        profile = store.get("profiles", options.profile_name(config))
    except SpecError:
        return
    outcome["rules"] = [str(f) for f in gates.check_relative(records, profile.compare, profile.file)]


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    outcome = config.stash.get(_OUTCOME, None)
    if not outcome:
        return
    write = terminalreporter.write_line
    if outcome.get("records"):
        from peftcore.report import compact_table

        terminalreporter.section("peftcore cases")
        for line in compact_table(outcome["records"]).splitlines():
            write(line)
    for problem in outcome.get("history_problems", []):
        write(f"earlier record {problem}", yellow=True)
    if outcome.get("rules"):
        terminalreporter.section("peftcore compare: rules broken (over all workers)", red=True)
        for line in outcome["rules"]:
            write(line, red=True)
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
