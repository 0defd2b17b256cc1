"""The import rule of ARCHITECTURE.md holds: import-linter's contracts (pyproject.toml,
``[tool.importlinter]``) are run here, so an import against the rule fails the suite.

Every import counts, one inside a function too (import-linter reads them all): a lazy import
decides when a module loads, not whether its package depends on another.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(
    not LINT_IMPORTS.is_file(), reason="import-linter is not installed (pip install -e '.[dev]')"
)


def lint_imports(project: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the peftcore package in ``project`` with that project's contracts."""
    env = {**os.environ, "PYTHONPATH": str(project)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_import_contracts_are_kept() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    kept = re.findall(r"^(.+) KEPT$", done.stdout, flags=re.MULTILINE)
    assert len(kept) >= 3, done.stdout  # the layers, the readers of records, no cycles


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # a vocabulary reaching up into a stage: the cycle this rule ended
        ("vocab/quantities.py", "from peftcore.score import metrics", "peftcore is layered"),
        # a gate may read the words below it, not a stage
        ("gates/bounds.py", "from peftcore.vocab import metrics", None),
        ("gates/bounds.py", "from peftcore.train import prompting", "gates and the report read records only"),
        # a lazy import counts as much as one at the top
        ("spec/checks.py", "def _f():\n    from peftcore.score import run", "peftcore is layered"),
        # two modules of the plugin importing each other (hooks imports state)
        (
            "pytest_plugin/state.py",
            "def _f():\n    from peftcore.pytest_plugin import hooks",
            "no import cycle",
        ),
    ],
)
def test_an_import_against_the_rule_fails(
    tmp_path: Path, module: str, line: str, contract: str | None
) -> None:
    """The contracts are not vacuous: one import against the rule, in a copy, breaks them."""
    shutil.copytree(ROOT / "peftcore", tmp_path / "peftcore", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    path = tmp_path / "peftcore" / module
    path.write_text(path.read_text() + f"\n{line}\n")
    done = lint_imports(tmp_path)
    if contract is None:  # an import the rule allows
        assert done.returncode == 0, done.stdout[-4000:]
    else:
        assert done.returncode == 1, done.stdout[-4000:] + done.stderr[-2000:]
        assert re.search(rf"^{re.escape(contract)}.* BROKEN$", done.stdout, flags=re.MULTILINE), done.stdout


def test_the_plugins_hooks_and_fixtures_do_not_import_each_other() -> None:
    """Not even lazily: what both need (the stash keys, the spec store, the results store) is in
    pytest_plugin/state.py."""
    import grimp

    graph = grimp.build_graph("peftcore", cache_dir=None)
    hooks, fixtures = "peftcore.pytest_plugin.hooks", "peftcore.pytest_plugin.fixtures"
    assert not graph.chain_exists(importer=hooks, imported=fixtures)
    assert not graph.chain_exists(importer=fixtures, imported=hooks)
