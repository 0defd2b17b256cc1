"""The benchmark grid: one test, parametrized by the plugin into method x model x task cases.

pytest benchmarks                       # the default profile (quick)
pytest benchmarks --profile smoke       # the CI profile
pytest benchmarks -k "dora and arc"     # a slice of the grid
"""

from pathlib import Path

from peftcore.runner import CaseRun, run_case


def test_case(case, base_models, task_data, benchmark, peftcore_run_dir, peftcore_device, pytestconfig):
    data = task_data.get(case)  # data first: a bad task spec fails before any model loads
    base = base_models.get(case)
    ctx = CaseRun(
        run_dir=peftcore_run_dir,
        run_id=peftcore_run_dir.name,
        device=peftcore_device,
        repo_root=Path(pytestconfig.rootpath),
        # Training runs once: pytest-benchmark's default of several rounds would train again.
        timer=lambda fn: benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0),
        extra_info=benchmark.extra_info,
    )
    run_case(case, base, data, ctx)
