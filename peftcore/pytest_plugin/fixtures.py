"""The plugin's fixtures: cached base models and task data, the session's pipeline, a case runner.

Expensive things are session-scoped and keyed by what makes them different:

- ``task_data``: each task's examples, loaded once per (task, split sizes) and cached on disk;
- ``base_models``: one loaded base-model variant (model, quantization, double quantization,
  compute dtype) at a time. Cases are ordered by variant (see :mod:`peftcore.spec.cases`), so
  each variant loads once while memory stays flat, and every case gets its own deep copy
  (``LoadedBase.fresh()``): adapters and trained weights never leak into the next case;
- ``peftcore_session``: the case pipeline (:class:`peftcore.pipeline.session.BenchmarkSession`);
- ``peftcore_runner``: runs one case through the pipeline and reports it to pytest.

A project may override any of them in its own ``conftest.py`` (e.g. a ``base_models`` that
loads from elsewhere).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from peftcore.errors import PeftcoreError, SizeError
from peftcore.pytest_plugin import options
from peftcore.pytest_plugin.state import SESSION, remote_results, spec_store
from peftcore.pytest_plugin.workers import RECORD_PROPERTY, is_worker

if TYPE_CHECKING:
    from peftcore.data.example import TaskData
    from peftcore.models.load import LoadedBase
    from peftcore.pipeline.session import BenchmarkSession, Outcome
    from peftcore.spec import DataSizes
    from peftcore.spec.cases import Case


class TaskDataCache:
    """``get(case)`` -> the case's :class:`TaskData`, loaded once per (task name, sizes).

    ``prepare(cases)`` loads the data of every case of the session up front, before the first
    model loads: a task whose data is missing or too small for the sizes asked (``--held-out-size
    100000``) then fails its cases at once, not after others have trained for minutes.
    """

    def __init__(self) -> None:
        self._loaded: dict[tuple[str, DataSizes], TaskData] = {}
        self._failed: dict[tuple[str, DataSizes], Exception] = {}
        self.prepared = False

    def prepare(self, cases: Iterable[Case]) -> None:
        self.prepared = True
        for case in cases:
            with contextlib.suppress(PeftcoreError, OSError):  # kept in _failed, raised by get()
                self.get(case)

    def get(self, case: Case) -> TaskData:
        from peftcore.data.tasks import load_task

        key = (case.task.name, case.data)
        if key in self._failed:
            raise self._failed[key]
        if key not in self._loaded:
            try:
                self._loaded[key] = load_task(case.task, case.data)
            except SizeError as err:  # the sizes were set by the profile or the command line
                self._failed[key] = SizeError(case.sizes_from or err.file, err.key, err.expected)
                raise self._failed[key] from None
            except (PeftcoreError, OSError) as err:
                self._failed[key] = err
                raise
        return self._loaded[key]


class BaseModelCache:
    """``get(case)`` -> the :class:`LoadedBase` of the case's variant (one held at a time)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.loads: list[tuple[Any, ...]] = []  # variant keys in the order they were loaded
        self._key: tuple[Any, ...] | None = None
        self._loaded: LoadedBase | None = None

    def get(self, case: Case) -> LoadedBase:
        from peftcore.measure import release_freed_memory
        from peftcore.models.load import load_base

        key = (case.model, case.method.base)
        if key != self._key:
            self._loaded = None  # drop the previous variant before loading the next
            release_freed_memory()
            self._loaded = load_base(case.model, case.method.base, self.device)
            self._key = key
            self.loads.append(case.variant_key)
        assert self._loaded is not None
        return self._loaded


@pytest.fixture(scope="session")
def peftcore_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    from peftcore.device import default_device

    return default_device()


@pytest.fixture(scope="session")
def base_models(peftcore_device: str) -> BaseModelCache:
    return BaseModelCache(peftcore_device)


@pytest.fixture(scope="session")
def task_data() -> TaskDataCache:
    """Task data for cases: ``task_data.get(case)``; errors are one line naming the spec file."""
    return TaskDataCache()


@pytest.fixture(scope="session")
def peftcore_run_dir(pytestconfig: pytest.Config) -> Path:
    """This session's run folder: ``<results>/<run-id>/``."""
    return options.results_dir(pytestconfig) / options.run_id(pytestconfig)


def benchmark_session(config: pytest.Config, device: str = "cpu") -> BenchmarkSession:
    """The session's pipeline, made at its first use and kept in the config's stash."""
    if SESSION not in config.stash:
        from peftcore.pipeline.session import BenchmarkSession, RerunPolicy, keyword_matcher

        rerun = config.getoption("--rerun")
        policy = RerunPolicy()
        if rerun == "*":
            policy = RerunPolicy(everything=True)
        elif rerun:
            policy = RerunPolicy(expression=rerun, matcher=keyword_matcher(rerun))
        remote = remote_results(config)
        if remote is not None:
            remote.pull()  # what other machines wrote: resume and adopt from it
        config.stash[SESSION] = BenchmarkSession(
            run_dir=options.results_dir(config) / options.run_id(config),
            results_dir=options.results_dir(config),
            profile=spec_store(config).get("profiles", options.profile_name(config)),
            rerun=policy,
            device=device,
            repo_root=Path(config.rootpath),
            publish=remote.push if remote is not None else None,
        )
    return config.stash[SESSION]


@pytest.fixture(scope="session")
def peftcore_session(pytestconfig: pytest.Config, peftcore_device: str) -> BenchmarkSession:
    """The case pipeline of this session: cached results, records, gates."""
    return benchmark_session(pytestconfig, peftcore_device)


class CaseRunner:
    """Runs one case through the session's pipeline and reports the outcome to pytest.

    The timed part of a case (training; scoring for a case that trains nothing) runs once under
    pytest-benchmark's ``pedantic``, and the case's figures and whole record go into
    ``benchmark.extra_info``. A case that ran nothing timed (an adopted result, a failure before
    training) never asks for the ``benchmark`` fixture, so pytest-benchmark's table holds only
    real timings.
    """

    def __init__(
        self,
        session: BenchmarkSession,
        models: BaseModelCache,
        data: TaskDataCache,
        request: pytest.FixtureRequest,
    ) -> None:
        self.session, self.models, self.data, self.request = session, models, data, request
        self.benchmark: Any = None

    def _time(self, what: str, fn: Callable[[], Any]) -> Any:
        self.benchmark = self.request.getfixturevalue("benchmark")
        self.benchmark.extra_info["timed"] = what
        return self.benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)

    def run(self, case: Case) -> Outcome:
        if not self.data.prepared:
            self.data.prepare(_selected_cases(self.request.session))
        outcome = self.session.run(case, data=self.data.get, model=self.models.get, timer=self._time)
        if self.benchmark is not None:
            _fill_extra_info(self.benchmark.extra_info, outcome.record)
        if is_worker(self.request.config):  # to the xdist controller, with this test's report
            self.request.node.user_properties.append((RECORD_PROPERTY, dict(outcome.record)))
        if outcome.stops_session:
            self.request.session.shouldstop = outcome.stops_session
        if outcome.error is not None:
            # Bad input, divergence, out of memory, a missing file: the recorded one line says it
            # all. Anything else is a bug (ours or a library's): its traceback helps.
            if isinstance(outcome.error, (PeftcoreError, OSError)):
                pytest.fail(f"{case.case_id}: {outcome.record.get('reason')}", pytrace=False)
            raise outcome.error
        if outcome.gate_failures:
            pytest.fail("\n".join(outcome.gate_failures), pytrace=False)
        if outcome.reused:
            pytest.skip(outcome.reused)
        return outcome


@pytest.fixture
def peftcore_runner(
    peftcore_session: BenchmarkSession,
    base_models: BaseModelCache,
    task_data: TaskDataCache,
    request: pytest.FixtureRequest,
) -> CaseRunner:
    """``peftcore_runner.run(case)``: one case through the pipeline, reported to pytest."""
    return CaseRunner(peftcore_session, base_models, task_data, request)


def _selected_cases(session: pytest.Session) -> list[Case]:
    """The cases this session runs (after -k, -m and deselection), in order."""
    return [
        item.callspec.params["case"]
        for item in session.items
        if hasattr(item, "callspec") and "case" in item.callspec.params
    ]


def _fill_extra_info(extra: dict[str, Any], record: Any) -> None:
    """pytest-benchmark's extra_info (filled in place): the figures, and the whole record."""
    training = record.get("training") or {}
    for key in (
        "train_seconds",
        "tokens_per_second",
        "peak_memory_bytes",
        "trainable_params",
        "adapter_bytes",
    ):
        if key in training:
            extra[key] = training[key]
    for split, values in (record.get("metrics") or {}).items():
        for name, value in values.items():
            extra[f"{split}.{name}"] = value
    extra["peftcore_record"] = record
