"""The optimizer and learning-rate schedule names transformers' Trainer accepts, read from its
source without importing it (importing transformers' training modules imports torch, and specs
are checked at collection, which stays torch-free). Read from whatever transformers is
installed, so the list never drifts; when its source cannot be read, the names are checked
when the Trainer is built instead.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# (module file inside transformers, enum class) of each name kind.
_ENUMS = {
    "optimizer": ("training_args.py", "OptimizerNames"),
    "lr_scheduler": ("trainer_utils.py", "SchedulerType"),
}


@functools.cache
def accepted(kind: str) -> frozenset[str]:
    """The names transformers accepts for ``optimizer`` or ``lr_scheduler``; empty if unknown."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    file, enum = _ENUMS[kind]
    path = Path(next(iter(spec.submodule_search_locations))) / file
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError):
        return frozenset()
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == enum:
            return frozenset(
                stmt.value.value
                for stmt in node.body
                if isinstance(stmt, ast.Assign)
                and isinstance(stmt.value, ast.Constant)
                and isinstance(stmt.value.value, str)
            )
    return frozenset()
