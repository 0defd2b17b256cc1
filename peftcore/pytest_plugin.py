"""pytest plugin: a profile of specs becomes one parametrized case per method x model x task.

Registered by the repository's ``conftest.py``. Collection stays cheap and torch-free: this
module imports only the spec loader; models, data and training load inside fixtures.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Any

import pytest

from peftcore.cases import Case, expand
from peftcore.errors import SpecError
from peftcore.specs import SECTION, SpecStore

DEFAULT_PROFILE = "quick"
_STORE = pytest.StashKey[SpecStore | None]()
_CASES = pytest.StashKey[list[Case]]()
_RUN_ID = pytest.StashKey[str]()


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
        config.stash[_CASES] = expand(
            store,
            profile_name(config),
            overrides=overrides,
            data_overrides={k: v for k, v in sizes.items() if v is not None},
            seeds=_seeds(config),
        )
    return config.stash[_CASES]


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
