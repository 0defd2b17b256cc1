"""Where a record's numbers come from: package versions, peftcore's own code, the git state.

``package_versions()`` is read once per process. peftcore's version in it carries a fingerprint
of the source a case's numbers depend on (``0.1.0+<12 hex>``), so a change to that code changes
the case's identity (:mod:`peftcore.pipeline.identity`) and reruns cached cases. Which code and
which packages count is split in two, so that a change to scoring re-scores a finished case's
saved adapter instead of training it again:

- **training**: what can change the trained weights. The training stages (``peftcore.train``,
  ``peftcore.data``, ``peftcore.models``) and every module they import, found in the source's
  import statements (every one, inside a function too: the graph import-linter checks); the
  walk stops at :mod:`peftcore.vocab`, names and record types that cannot change a weight. Plus
  the modules that run the trainer (those importing :data:`TRAINER`: ``pipeline.execute`` seeds,
  tokenizes and trains), their own source. Packages: what trains, what turns text into ids or
  weights into tensors, what reads the data.
- **scoring**: the rest of what makes a record: every module :data:`CASE_RUN` imports (the
  case's run and its deployment variants: scoring, metrics, the record's writing). Packages:
  what computes a metric.
- **neither**: what only orchestrates cases or reads finished records (the pytest plugin, the
  session's planning, gates, report, planner, CLI).

``training_hash`` takes the training versions and the training code's fingerprint; ``case_hash``
takes every hashed version, peftcore's included (training and scoring code). A source file that
is no module (an ``evaluate`` script in ``score/metric_modules/``, loaded by path) goes with the
package folder it is in.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import hashlib
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

Scope = Literal["training", "scoring", "neither"]

# Every package a record names, and what a different version of it can change (then it is part of
# a case's identity, and a cached result of another version is not reused): "training", the
# trained weights and so every number of the case: what trains (torch, transformers, peft,
# bitsandbytes, accelerate: the Trainer's mixed precision and accumulation), what turns text into
# ids or weights into tensors (tokenizers, gguf, safetensors), what reads the data (datasets,
# pyarrow), numpy; "scoring", a score of the trained weights only: what computes a metric
# (evaluate, sentence-transformers, bert-score, rouge-score), so a new version re-scores a saved
# adapter. The plotting and reporting libraries are left out. peftcore's own version is added to
# these, with the fingerprint of its case-path code (see the module docstring).
PACKAGES: dict[str, Scope] = {
    "torch": "training",
    "transformers": "training",
    "peft": "training",
    "bitsandbytes": "training",
    "accelerate": "training",
    "tokenizers": "training",
    "gguf": "training",
    "safetensors": "training",
    "datasets": "training",
    "pyarrow": "training",
    "numpy": "training",
    "evaluate": "scoring",
    "sentence-transformers": "scoring",
    "bert-score": "scoring",
    "rouge-score": "scoring",
}

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Where the walks of the import graph start (module names; a package stands for all its modules).
TRAINING_STAGES = ("peftcore.train", "peftcore.data", "peftcore.models")
TRAINER = "peftcore.train.trainer"  # a module importing it runs training
CASE_RUN = ("peftcore.pipeline.execute", "peftcore.pipeline.deploy")  # what writes a record
NAMES_ONLY = "peftcore.vocab"  # where the training walk stops: names that change no weight


# --------------------------------------------------------------------------- peftcore's own code


def source_modules(root: Path | None = None) -> dict[str, Path]:
    """Every importable module of the package at ``root`` (default: this peftcore) -> its file."""
    root = root or PACKAGE_ROOT
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        folders = (root.parent.joinpath(*parts[:i]) for i in range(1, len(parts)))
        if not all((folder / "__init__.py").is_file() for folder in folders):
            continue  # not importable: a folder on the way has no __init__.py
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return modules


def import_graph(root: Path | None = None) -> dict[str, set[str]]:
    """Module -> the peftcore modules it imports, read from its import statements (every one,
    inside a function or under ``TYPE_CHECKING`` too, as grimp reads them for import-linter)."""
    modules = source_modules(root)
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def _imported(name: str, path: Path, modules: Mapping[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1 packages
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in modules else base)
    return {module for module in found if module in modules and module != name}


def _within(module: str, packages: Iterable[str]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _reachable(starts: Iterable[str], graph: Mapping[str, set[str]], stop: str | None = None) -> set[str]:
    seen: set[str] = set()
    todo = list(starts)
    while todo:
        module = todo.pop()
        if module in seen or (stop is not None and _within(module, [stop])):
            continue
        seen.add(module)
        todo.extend(graph[module])
    return seen


def module_scopes(root: Path | None = None) -> dict[str, Scope]:
    """Every importable module -> training, scoring or neither, by the rule of the module
    docstring."""
    graph = import_graph(root)
    training = _reachable((m for m in graph if _within(m, TRAINING_STAGES)), graph, stop=NAMES_ONLY)
    training |= {m for m, imported in graph.items() if TRAINER in imported}
    case = _reachable(CASE_RUN, graph)
    return {m: "training" if m in training else "scoring" if m in case else "neither" for m in sorted(graph)}


def code_scopes(root: Path | None = None) -> dict[str, Scope]:
    """Every source file of the package (path relative to it, ``/``-separated) -> its scope. A
    file that is no importable module takes the scope of the package folder it is in."""
    root = root or PACKAGE_ROOT
    modules = source_modules(root)
    by_module = module_scopes(root)
    by_file = {path: by_module[name] for name, path in modules.items()}
    by_folder = {path.parent: by_module[name] for name, path in modules.items() if path.name == "__init__.py"}
    scopes: dict[str, Scope] = {}
    for path in sorted(root.rglob("*.py")):
        folder = path.parent
        while path not in by_file and folder not in by_folder:
            folder = folder.parent
        scopes[path.relative_to(root).as_posix()] = by_file[path] if path in by_file else by_folder[folder]
    return scopes


def code_fingerprint(scope: Literal["training", "case"] = "case") -> str:
    """12 hex digits over the source of every module on the training path (``"training"``), or
    on the training and scoring paths (``"case"``): see the module docstring."""
    return _fingerprints()[scope]


@functools.cache
def _fingerprints() -> dict[str, str]:
    scopes = code_scopes()
    digests = {"training": hashlib.sha256(), "case": hashlib.sha256()}
    for relative, where in scopes.items():
        if where == "neither":
            continue
        source = (PACKAGE_ROOT / relative).read_bytes()
        for name in ("training", "case") if where == "training" else ("case",):
            digests[name].update(relative.encode())
            digests[name].update(source)
    return {name: digest.hexdigest()[:12] for name, digest in digests.items()}


# --------------------------------------------------------------------------- package versions


@functools.cache
def _versions() -> tuple[tuple[str, str | None], ...]:
    from importlib.metadata import PackageNotFoundError, version

    found: dict[str, str | None] = {}
    for name in (*PACKAGES, "peftcore"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    found["peftcore"] = f"{found.get('peftcore') or '0'}+{code_fingerprint('case')}"
    return tuple(found.items())


def package_versions() -> dict[str, str | None]:
    """Installed version of every package in :data:`PACKAGES` and of peftcore (None when absent);
    read once."""
    return dict(_versions())


def hashed_versions(
    versions: Mapping[str, str | None], scope: Literal["training", "case"] = "case"
) -> dict[str, str | None]:
    """The versions that are part of a case's identity (``"case"``: every package of
    :data:`PACKAGES`, and peftcore's own with its code fingerprint), or of its training's
    (``"training"``: the training packages; the training code enters as its own fingerprint)."""
    names = [name for name, where in PACKAGES.items() if scope == "case" or where == "training"]
    hashed = {name: versions.get(name) for name in names}
    if scope == "case":
        hashed["peftcore"] = versions.get("peftcore")
    return hashed


def git_state(where: Path) -> dict[str, Any]:
    """``{"git_commit": sha or None, "git_dirty": bool or None}`` of the checkout at ``where``."""

    def run(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = run("rev-parse", "HEAD")
    status = run("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": commit, "git_dirty": bool(status) if status is not None else None}


def now() -> str:
    """The time in UTC, ISO 8601 to the second (sorts as text)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
