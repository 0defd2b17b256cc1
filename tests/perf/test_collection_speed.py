"""How long collecting a 500-case grid takes (the goal: well under 2 s).

Benchmarks, not timed assertions: the machines are shared and noisy, so a threshold here would
fail at random. Read the figures with

    .venv/bin/python -m pytest tests/perf --benchmark-only

Three views of the same grid (10 methods x 5 models x 10 tasks): ``expand()`` alone, a whole
``pytest --collect-only`` in process (what the plugin adds), and the same command in a fresh
interpreter (what a user waits for: interpreter start and every installed plugin included).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from peftcore.spec import SpecStore
from peftcore.spec.cases import expand

SHIPPED = Path(__file__).resolve().parents[2] / "benchmarks" / "specs"
CASES = 500
INI = "[pytest]\npeftcore_specs = specs\naddopts = -p no:cacheprovider\n"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project whose ``grid500`` profile expands into 500 cases."""
    root = tmp_path_factory.mktemp("grid500")
    specs = Path(shutil.copytree(SHIPPED, root / "specs"))
    models = [f"model-{i}" for i in range(5)]
    for name in models:
        (specs / "models" / f"{name}.yaml").write_text(f"include: smollm2-135m\ndescription: copy {name}\n")
    methods = sorted(p.stem for p in (specs / "methods").glob("*.yaml"))[:10]
    tasks = sorted(p.stem for p in (specs / "tasks").glob("*.yaml"))[:10]
    assert len(methods) * len(models) * len(tasks) == CASES
    profile = {"description": "500 cases", "methods": methods, "models": models, "tasks": tasks}
    (specs / "profiles" / "grid500.yaml").write_text(yaml.safe_dump(profile))
    (root / "pytest.ini").write_text(INI)
    return root  # no conftest, no test file: the installed plugin collects the grid from specs/


def test_expand_500_cases(benchmark, project: Path) -> None:
    def run() -> int:
        return len(expand(SpecStore(project / "specs"), "grid500"))  # parsing included

    assert benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=1) == CASES


def test_collect_500_cases_in_process(benchmark, pytester: pytest.Pytester, project: Path) -> None:
    shutil.copytree(project, pytester.path, dirs_exist_ok=True)
    # The hypothesis plugin re-imports hypothesis at the end of every in-process run (pytester
    # drops it from sys.modules in between): not what collection costs.
    args = ("--collect-only", "-q", "--profile", "grid500", "-p", "no:hypothesispytest")

    def run() -> pytest.RunResult:
        return pytester.runpytest(*args)

    result = benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
    result.stdout.fnmatch_lines([f"{CASES} tests collected in *"])


@pytest.mark.parametrize("bytecode", ["as-is", "cached"])
def test_collect_500_cases_command(
    benchmark, project: Path, tmp_path_factory: pytest.TempPathFactory, bytecode: str
) -> None:
    """``as-is`` keeps this environment's PYTHONDONTWRITEBYTECODE: pytest then re-rewrites every
    module of the hypothesis plugin (which imports hypothesis at the end of each session), ~1 s
    a run. ``cached`` writes bytecode under a temporary prefix, as a usual setup does."""
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "--profile", "grid500"]
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    if bytecode == "cached":
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        # Outside this session's basetemp, so that later sessions find the bytecode; the median
        # of three rounds discards the one cold run.
        env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.getbasetemp().parent / "peftcore-pycache")

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True, timeout=120)

    done = benchmark.pedantic(run, rounds=3 if bytecode == "cached" else 1, iterations=1)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{CASES} tests collected" in done.stdout
    benchmark.extra_info["pytest_reported"] = done.stdout.strip().splitlines()[-1]
