"""The benchmark grid: one test, parametrized by the plugin into method x model x task cases.

    pytest benchmarks                       # the default profile (quick)
    pytest benchmarks --profile smoke       # the CI profile
    pytest benchmarks -k "dora and arc"     # a slice of the grid

A case whose result an earlier run already holds (same content hash) is skipped as "cached
result from <run>"; its record still counts for the gates and the report. ``--rerun`` forces it.
"""

from pathlib import Path

import pytest

from peftcore.pipeline.execute import CaseRun, run_case
from peftcore.pipeline.session import CachedResult


def test_case(case, peftcore_session, base_models, task_data, benchmark, peftcore_device, pytestconfig):
    data = task_data.get(case)  # data first: a bad task spec fails before any model loads
    try:
        identity, reuse = peftcore_session.plan(case, data)
    except CachedResult as cached:
        failures = peftcore_session.gate_failures(case, cached.record)
        if failures:
            pytest.fail("\n".join(failures), pytrace=False)
        pytest.skip(str(cached))

    timed = []

    def timer(fn):
        # Training runs once: pytest-benchmark's default of several rounds would train again.
        timed.append(True)
        return benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)

    ctx = CaseRun(
        run_dir=peftcore_session.run_dir,
        run_id=peftcore_session.run_id,
        device=peftcore_device,
        repo_root=Path(pytestconfig.rootpath),
        timer=timer,
        extra_info=benchmark.extra_info,
        identity=identity,
        reuse=reuse,
    )
    try:
        run_case(case, base_models.get(case), data, ctx)
    finally:
        record = peftcore_session.finished(case)
        if not timed:
            # No training timed (the untrained base, a re-scored adapter, or a case that failed
            # or was interrupted before training): an empty benchmark keeps the case and its
            # record in pytest-benchmark's JSON, and the fixture counts as used.
            benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    failures = peftcore_session.gate_failures(case, record)
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)
