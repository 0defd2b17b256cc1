"""The pytest plugin, tested by running pytest inside pytest (``pytester``), as pytest-benchmark
tests itself. In-process runs are used where the run leaves no trace in ``sys.modules`` that
matters; the torch check runs in a subprocess."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from peftcore.spec import SpecStore
from peftcore.spec.cases import Case, expand

REPO = Path(__file__).resolve().parents[1]
CASE_LINE = re.compile(r"(?:specs/defaults\.yaml|test_grid\.py)::test_case\[(.+)\]")
# No cache folder; and no hypothesis plugin, which imports hypothesis at the end of every run: in
# process, pytester then drops it from sys.modules and the next run re-imports (and, without
# bytecode caching, re-rewrites) it, ~2.5 s a run.
ADDOPTS = "-p no:cacheprovider -p no:hypothesispytest"
INI = f"[pytest]\npeftcore_specs = specs\naddopts = {ADDOPTS}\n"


@pytest.fixture
def grid(pytester: pytest.Pytester, shipped_specs: Path) -> pytest.Pytester:
    """A project with a copy of the shipped specs and nothing else: no conftest, no test file.
    The plugin comes from its entry point and collects the grid from ``specs/defaults.yaml``."""
    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(".ini", pytest=INI)
    return pytester


def own_grid_test(pytester: pytest.Pytester, body: str) -> str:
    """A project's own test over the cases (run by name, so the built-in grid is not collected)."""
    pytester.makepyfile(test_grid=body)
    return "test_grid.py"


def collected(result: pytest.RunResult) -> list[str]:
    """Case ids in the order ``--collect-only -q`` lists them."""
    return [m.group(1) for line in result.outlines if (m := CASE_LINE.fullmatch(line.strip()))]


def planned(pytester: pytest.Pytester, profile: str, **kwargs: object) -> list[Case]:
    return expand(SpecStore(pytester.path / "specs"), profile, **kwargs)  # type: ignore[arg-type]


def write_profile(pytester: pytest.Pytester, name: str, text: str) -> Path:
    path = pytester.path / "specs" / "profiles" / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- the grid


def test_default_profile_lists_its_cases(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    cases = planned(grid, "quick")  # the plugin's default profile
    assert collected(result) == [c.case_id for c in cases]
    assert [f"{c.method.name}-{c.model.name}-{c.task.name}" for c in cases] == collected(result)


def test_ini_chooses_the_default_profile(grid: pytest.Pytester) -> None:
    grid.makefile(".ini", pytest=INI + "peftcore_profile = smoke\n")
    result = grid.runpytest("--collect-only", "-q")
    assert collected(result) == [c.case_id for c in planned(grid, "smoke")]


def test_profile_full_lists_every_method_model_and_task(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q", "--profile", "full")
    assert result.ret == pytest.ExitCode.OK
    full = SpecStore(grid.path / "specs").get("profiles", "full")
    expected = {f"{m}-{mo}-{t}" for m in full.methods for mo in full.models for t in full.tasks}
    ids = collected(result)
    assert len(ids) == len(full.methods) * len(full.models) * len(full.tasks) == len(expected)
    assert set(ids) == expected


def test_keyword_expression_selects_a_slice(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q", "--profile", "full", "-k", "dora and arc")
    assert result.ret == pytest.ExitCode.OK
    cases = {c.case_id: c for c in planned(grid, "full")}
    ids = collected(result)
    # -k matches substrings, so QDoRA (DoRA over a 4-bit base) is a DoRA case too.
    assert ids
    assert {cases[i].method.name for i in ids} == {"dora", "qdora"}
    assert all(cases[i].task.name.startswith("arc_") for i in ids)
    assert set(ids) == {i for i in cases if "dora" in i and "arc" in i}


def test_marker_selects_exactly_one_method(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q", "--profile", "full", "-m", "qlora", "--strict-markers")
    assert result.ret == pytest.ExitCode.OK
    expected = [c.case_id for c in planned(grid, "full") if c.method.name == "qlora"]
    assert expected
    assert collected(result) == expected  # not lora, not qdora (which includes qlora.yaml)


def test_strict_markers_hold_for_every_spec_name(grid: pytest.Pytester) -> None:
    store = SpecStore(grid.path / "specs")
    result = grid.runpytest("--markers", "--strict-markers")
    for kind in ("methods", "models", "tasks"):
        for name in store.names(kind):
            result.stdout.fnmatch_lines([f"@pytest.mark.{name}: *"])
    # Every case carries a method, a model and a task marker; with --strict-markers an
    # unregistered one would fail collection.
    expression = "peftcore_case and (lora or smollm2-135m or arc_easy)"
    result = grid.runpytest("--collect-only", "-q", "--profile", "full", "--strict-markers", "-m", expression)
    assert result.ret == pytest.ExitCode.OK
    assert len(collected(result)) == len(planned(grid, "full"))


def test_inline_variants_are_markers_too(grid: pytest.Pytester) -> None:
    result = grid.runpytest(
        "--collect-only", "-q", "--profile", "lora-sweep", "--strict-markers", "-m", "lora-r4"
    )
    assert result.ret == pytest.ExitCode.OK
    expected = [c.case_id for c in planned(grid, "lora-sweep") if c.method.name == "lora-r4"]
    assert expected
    assert collected(result) == expected


def test_seeds_double_the_cases(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q", "--seeds", "0,1")
    assert result.ret == pytest.ExitCode.OK
    once = [c.case_id for c in planned(grid, "quick")]
    assert collected(result) == [f"{i}-seed{s}" for i in once for s in (0, 1)]


@pytest.mark.parametrize("seeds", ["0,0", "a,b", ","])
def test_malformed_seeds_are_a_usage_error(grid: pytest.Pytester, seeds: str) -> None:
    result = grid.runpytest("--collect-only", "-q", "--seeds", seeds)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["ERROR: --seeds: expected *"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_command_line_budget_reaches_the_case(grid: pytest.Pytester) -> None:
    test = own_grid_test(grid, "def test_case(case):\n    assert case.training.max_steps == 3\n")
    result = grid.runpytest(test, "-q", "--profile", "smoke", "--max-steps", "3")
    result.assert_outcomes(passed=len(planned(grid, "smoke")))


def test_a_methods_learning_rate_beats_the_profiles(grid: pytest.Pytester) -> None:
    write_profile(
        grid,
        "p",
        "methods: [full, lora]\nmodels: [smollm2-135m]\ntasks: [sst2, arc_easy]\n"
        "training: {learning_rate: 1.0e-3}\n",
    )
    test = own_grid_test(
        grid,
        """
        def test_case(case):
            # full.yaml sets 2.0e-5; the profile's 1.0e-3 applies to the rest
            expected = {"full": 2.0e-5, "lora": 1.0e-3}[case.method.name]
            assert case.training.learning_rate == expected
        """,
    )
    grid.runpytest(test, "-q", "--profile", "p").assert_outcomes(passed=4)
    own_grid_test(grid, "def test_case(case):\n    assert case.training.learning_rate == 0.5\n")
    grid.runpytest(test, "-q", "--profile", "p", "--learning-rate", "0.5").assert_outcomes(passed=4)


def test_cases_are_grouped_by_base_model_variant(grid: pytest.Pytester) -> None:
    # a second model that needs no hub cache: the default one under another name
    models = grid.path / "specs" / "models"
    (models / "smollm2-135m-twin.yaml").write_text(
        (models / "smollm2-135m.yaml").read_text(encoding="utf-8"), encoding="utf-8"
    )
    write_profile(
        grid,
        "p",
        "methods: [qlora, lora, lora-8bit, qdora, base, full, dora]\n"
        "models: [smollm2-135m-twin, smollm2-135m]\n"
        "tasks: [sst2, arc_easy]\n",
    )
    result = grid.runpytest("--collect-only", "-q", "--profile", "p")
    cases = {c.case_id: c for c in planned(grid, "p")}
    ids = collected(result)
    assert sorted(ids) == sorted(cases)
    order = [(cases[i].model.name, cases[i].method.base.quantization) for i in ids]
    blocks = [key for n, key in enumerate(order) if n == 0 or order[n - 1] != key]
    assert len(blocks) == len(set(blocks)) == 6, blocks  # 2 models x (none, nf4, int8), each once
    assert cases[ids[0]].method.name == "base"  # the reference row leads its variant


def test_run_dir_fixture(grid: pytest.Pytester) -> None:
    grid.makepyfile(
        test_run_dir="""
        from pathlib import Path

        def test_run_dir(peftcore_run_dir, pytestconfig):
            assert peftcore_run_dir == Path(pytestconfig.rootpath) / "out" / "r1"
        """
    )
    grid.runpytest("-q", "test_run_dir.py", "--run-id", "r1", "--results-dir", "out").assert_outcomes(
        passed=1
    )


# --------------------------------------------------------------------------- bad specs

ONE_CASE = "methods: [lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
# (what is wrong, file written, its text, file at fault, the rest of the one line)
BROKEN = [
    (
        "unknown key",
        "methods/lora.yaml",
        "tuner: lora\nadaptr: {r: 8}\n",
        None,
        "key 'adaptr': unknown key; *",
    ),
    (
        "wrong type",
        "methods/lora.yaml",
        "tuner: lora\ntraining: {max_steps: x}\n",
        None,
        "key 'training.max_steps': expected an integer, got 'x'",
    ),
    (
        "unknown peft keyword",
        "methods/lora.yaml",
        "tuner: lora\nadapter: {rr: 8}\n",
        None,
        "key 'adapter.rr': not a LoraConfig keyword (peft); did you mean 'r'?",
    ),
    (
        "unknown tuner",
        "methods/lora.yaml",
        "tuner: lorra\n",
        None,
        "key 'tuner': unknown tuner 'lorra'; did you mean *",
    ),
    (
        "include cycle",
        "methods/lora.yaml",
        "include: dora\n",
        "methods/dora.yaml",
        "key 'include': include cycle: lora.yaml -> dora.yaml -> lora.yaml",
    ),
    ("invalid YAML", "methods/lora.yaml", "tuner: [lora\n", None, "invalid YAML at line 2, column 1: *"),
    (
        "unknown method",
        "profiles/quick.yaml",
        "methods: [lorra]\nmodels: [smollm2-135m]\ntasks: [sst2]\n",
        None,
        "key 'methods': unknown method 'lorra'; did you mean *",
    ),
    (
        "empty matrix",
        "profiles/quick.yaml",
        "methods: []\nmodels: [smollm2-135m]\ntasks: [sst2]\n",
        None,
        "key 'methods': empty list: a profile needs at least one method",
    ),
    (
        "seen over train",
        "profiles/quick.yaml",
        ONE_CASE + "data: {train: 5, seen: 6}\n",
        None,
        "key 'data.seen': seen (6) is drawn from train (5)",
    ),
    (
        "broken defaults",
        "defaults.yaml",
        "training: {max_steps: many}\n",
        None,
        "key 'training.max_steps': expected an integer, got 'many'",
    ),
]


@pytest.mark.parametrize(
    ("rel", "text", "at_fault", "message"), [pytest.param(*row[1:], id=row[0]) for row in BROKEN]
)
def test_a_broken_spec_is_one_line_at_collection(
    grid: pytest.Pytester, rel: str, text: str, at_fault: str | None, message: str
) -> None:
    specs = grid.path / "specs"
    (specs / rel).write_text(text, encoding="utf-8")
    result = grid.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines([f"spec error: {specs / (at_fault or rel)}: {message}"])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "During handling" not in output
    for module in ("store.py:", "schema.py:", "cases.py:", "hooks.py:"):
        assert module not in output


def test_an_unknown_profile_is_one_line(grid: pytest.Pytester) -> None:
    result = grid.runpytest("--collect-only", "-q", "--profile", "quik")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["spec error: unknown profile 'quik'; did you mean 'quick'?"])
    assert "Traceback" not in result.stdout.str()


def test_specs_names_the_folder_the_grid_comes_from_whatever_paths_are_given(grid: pytest.Pytester) -> None:
    """``pytest specs --specs other``: the grid of other/defaults.yaml, not of the path given
    (which holds a defaults.yaml of its own)."""
    other = grid.path / "other"
    shutil.copytree(grid.path / "specs", other)
    (other / "profiles" / "mine.yaml").write_text("methods: [base]\nmodels: [smollm2-135m]\ntasks: [sst2]\n")
    for args in (("specs",), (), ("other",), (str(other / "defaults.yaml"),)):
        result = grid.runpytest(*args, "--specs", "other", "--profile", "mine", "--collect-only", "-q")
        assert result.ret == pytest.ExitCode.OK, (args, result.stdout.str())
        cases = [line for line in result.outlines if "::test_case[" in line]
        assert cases == ["other/defaults.yaml::test_case[base-smollm2-135m-sst2]"], (args, result.outlines)


def test_other_tests_do_not_load_specs(grid: pytest.Pytester) -> None:
    """A broken spec fails only the modules that ask for a case."""
    (grid.path / "specs" / "methods" / "lora.yaml").write_text("tuner: lorra\n")
    grid.makepyfile(test_other="def test_other():\n    pass\n")
    result = grid.runpytest("-q", "test_other.py")
    result.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- an installed plugin


@pytest.mark.slow
def test_a_project_with_only_specs_runs_its_grid(grid: pytest.Pytester) -> None:
    """``pip install peftcore`` and a spec folder are enough: no conftest, no test file. One real
    case (the base model scored on a few SST-2 examples) runs through the package's fixtures."""
    write_profile(
        grid,
        "tiny",
        "methods: [base]\nmodels: [smollm2-135m]\ntasks: [sst2]\ndata: {train: 2, held_out: 4, seen: 2}\n",
    )
    result = grid.runpytest_subprocess(
        "specs", "-q", "--profile", "tiny", "--run-id", "r1", "--results-dir", "runs", "--no-report"
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["base-smollm2-135m-sst2  finished*accuracy*", "*1 passed*"])
    record = json.loads((grid.path / "runs" / "r1" / "cases" / "base-smollm2-135m-sst2.json").read_text())
    assert record["status"] == "finished"
    assert set(record["metrics"]) == {"held_out", "seen"}


def test_the_plugin_stays_out_of_a_project_without_specs(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Installed, the plugin is loaded in every pytest run; without a spec folder it adds its
    options and nothing else: no offline variables, no network guard, no grid."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)  # this session's own, inherited by the child
    pytester.makepyfile(
        test_plain="""
        import os
        import socket

        def test_plain():
            assert "HF_HUB_OFFLINE" not in os.environ
            assert socket.getaddrinfo.__module__ == "socket"  # not the guard's
        """
    )
    result = pytester.runpytest_subprocess("-q", *ADDOPTS.split())
    result.assert_outcomes(passed=1)


# --------------------------------------------------------------------------- no torch


def test_collecting_the_real_benchmarks_does_not_import_torch(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        torch_guard="""
        import sys
        from pathlib import Path

        HEAVY = ("torch", "transformers", "peft", "datasets", "bitsandbytes", "accelerate")

        def pytest_collection_finish(session):
            loaded = [name for name in HEAVY if name in sys.modules]
            assert not loaded, f"collection imported {loaded}"
            Path("guard-ran").write_text(str(len(session.items)))
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "torch_guard",
        *ADDOPTS.split(),
        f"--rootdir={REPO}",
        "-c",
        str(REPO / "pyproject.toml"),
        str(REPO / "benchmarks"),
        "--profile",
        "full",
        "--collect-only",
        "-q",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    full = SpecStore(REPO / "benchmarks" / "specs").get("profiles", "full")
    ran = (pytester.path / "guard-ran").read_text()
    assert int(ran) == len(full.methods) * len(full.models) * len(full.tasks)


# --------------------------------------------------------------------------- offline guard

NETWORK_TEST = """
import socket

def test_reaches_out():
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(0.5)
    try:
        sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed
    except OSError as err:
        print("connect failed:", err)
    finally:
        sock.close()
"""


def test_a_default_run_that_opens_a_socket_fails_naming_where(grid: pytest.Pytester) -> None:
    test = own_grid_test(grid, NETWORK_TEST)
    result = grid.runpytest_subprocess(test, "-q", "-s")
    assert result.ret == pytest.ExitCode.TESTS_FAILED  # the test itself passed: the guard failed it
    result.stdout.fnmatch_lines(
        [
            "*peftcore: network access is disabled (tried ('192.0.2.1', 9))*",
            "*peftcore: network access attempted (the run must be offline)*",
            "connect to ('192.0.2.1', 9)",
        ]
    )


def test_allow_network_lets_a_run_reach_out(grid: pytest.Pytester) -> None:
    test = own_grid_test(grid, NETWORK_TEST)
    result = grid.runpytest_subprocess(test, "-q", "-s", "--allow-network")
    assert result.ret == pytest.ExitCode.OK
    assert "network access is disabled" not in result.stdout.str()
    assert "network access attempted" not in result.stdout.str()
