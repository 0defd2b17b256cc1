"""A profile's ``tune:`` block: its rules, each method's resolved search, and the grid's values.

The search itself runs in Optuna (:mod:`peftcore.tune`); what is here needs no data and no
torch, so every mistake is one line at collection naming the file and the key:

- a searched key is ``training.<numeric training key>`` or ``adapter.<keyword of the method's
  tuner>`` (the adapter half is checked per method, in :func:`method_search`);
- a space is a range (``low`` < ``high``, both above 0 on a log scale) or a non-empty list of
  ``values``, not both; an integer key takes integers;
- the tuning split is not empty (``data.tune``), and ``tune.methods`` names methods the profile
  runs, each with a valid partial block;
- the objective is ``loss`` or a metric the task reports (checked per task, in
  :func:`check_objective`);
- a pruner looks at a trial before its last step: ``prune_after`` below the trial's steps
  (checked per case when ``tune.steps`` is unset), and set only with a pruner
  (:func:`check_pruning`).
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError, suggest
from peftcore.spec import peft_keywords
from peftcore.spec.loader import deep_merge
from peftcore.spec.schema import build, plain
from peftcore.spec.types import MethodSpec, ProfileSpec, SearchSpace, TaskSpec, TrainingBudget, TuneSettings
from peftcore.vocab.metrics import BUILT_IN_METRICS

LOSS = "loss"  # the objective every task has: the mean loss of the tuning split's answers
# The pruners' reduction factor (Optuna's default for hyperband; successive halving's own is 4):
# rungs at prune_after * 3**k steps, where a rung promotes the best third of the trials that
# reached it (while fewer than three have: the best so far).
REDUCTION_FACTOR = 3
# Training keys a search may not change: they decide what is compared, not how well one method
# trains (a trial's seed is the search's own; precision and processes change the computation).
_FIXED_TRAINING = {"seed", "precision", "processes", "parallelism", "stall_timeout_seconds", "logging_steps"}


def _numeric_training_keys() -> dict[str, type]:
    hints = typing.get_type_hints(TrainingBudget)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(TrainingBudget)
        if hints[f.name] in (int, float) and f.name not in _FIXED_TRAINING
    }


def check_tune(profile: ProfileSpec) -> None:
    """The rules of the module docstring that need only the profile (run when it loads)."""
    tune, file = profile.tune, profile.file
    if not tune.enabled:
        if tune.methods:
            raise SpecError(file, "tune.methods", "per-method changes to a search, but tune.search is empty")
        return
    _check_block(tune, file, "tune")
    if profile.data.tune < 1:
        raise SpecError(
            file,
            "data.tune",
            f"the tuning split is empty ({profile.data.tune}): a search needs examples to score its "
            "trials on, apart from held_out; set data.tune (e.g. 50)",
        )
    methods = _profile_methods(profile)
    for name in tune.methods:
        if name not in methods:
            raise SpecError(
                file, f"tune.methods.{name}", "not a method of this profile; " + suggest(name, methods)
            )
        resolved(tune, name, file)


def _profile_methods(profile: ProfileSpec) -> list[str]:
    names = list(profile.methods)
    for grid in profile.grids:
        names += [n for n in grid.get("methods", ()) if n not in names]
    return names


def resolved(tune: TuneSettings, method: str, file: Path | None) -> TuneSettings:
    """``tune`` with ``tune.methods[method]`` merged over it (checked, key named in the file)."""
    change = tune.methods.get(method)
    if not change:
        return tune
    key = f"tune.methods.{method}"
    if "methods" in change:
        raise SpecError(file, f"{key}.methods", "a method's change cannot hold methods of its own")
    merged = deep_merge({k: v for k, v in plain(tune).items() if k != "methods"}, plain(change))
    result: TuneSettings = build(TuneSettings, merged, file, key)
    _check_block(result, file, key)
    return result


def _check_block(tune: TuneSettings, file: Path | None, where: str) -> None:
    numeric = _numeric_training_keys()
    if not tune.search:
        raise SpecError(file, f"{where}.search", "empty: name at least one key to search")
    check_pruning(tune, tune.steps, file, where)
    if tune.choose == "one_se" and "training.learning_rate" not in tune.search:
        raise SpecError(
            file, f"{where}.choose", "one_se picks the largest learning rate: search training.learning_rate"
        )
    for name, space in tune.search.items():
        key = f"{where}.search.{name}"
        section, _, field_name = name.partition(".")
        if section == "training":
            if field_name not in numeric:
                raise SpecError(
                    file,
                    key,
                    f"training.{field_name} cannot be searched; numeric training keys: "
                    + suggest(field_name, sorted(numeric)),
                )
            _check_space(space, numeric[field_name], file, key)
        elif section == "adapter" and field_name:
            _check_space(space, float, file, key)
        else:
            raise SpecError(
                file, key, "expected training.<key> or adapter.<keyword>, e.g. training.learning_rate"
            )


def prune_after(tune: TuneSettings, steps: int) -> int:
    """The optimizer steps after which a pruned trial first looks at its tuning-split loss (the
    pruners' first rung): ``prune_after``, or a tenth of the trial's ``steps``, at least 1.

    >>> search = TuneSettings(pruner="hyperband")
    >>> prune_after(search, 20), prune_after(search, 5), prune_after(TuneSettings(prune_after=3), 20)
    (2, 1, 3)
    """
    return tune.prune_after or max(1, steps // 10)


def look_steps(tune: TuneSettings, steps: int) -> tuple[int, ...]:
    """The steps at which a pruned trial of ``steps`` steps looks at its loss: the pruners' rungs,
    ``prune_after * 3**k``, below ``steps`` (the last step's loss is the trial's objective).
    Optuna's successive halving decides only there, and each hyperband bracket at a subset, so a
    look between two rungs would cost a scoring of the tuning split and decide nothing.

    >>> look_steps(TuneSettings(pruner="hyperband"), 30), look_steps(TuneSettings(prune_after=2), 8)
    ((3, 9, 27), (2, 6))
    """
    at = [prune_after(tune, steps)]
    while at[-1] * REDUCTION_FACTOR < steps:
        at.append(at[-1] * REDUCTION_FACTOR)
    return tuple(step for step in at if step < steps)


def check_pruning(tune: TuneSettings, steps: int | None, file: Path | None, where: str) -> None:
    """A pruner's keys: ``prune_after`` only with a pruner, below the trial's ``steps`` (a trial
    must be looked at before its last step; ``steps`` None: not known yet, checked per case), and
    no searched ``training.max_steps`` (the pruner compares trials at the same step)."""
    if tune.pruner == "none":
        if tune.prune_after is not None:
            raise SpecError(
                file,
                f"{where}.prune_after",
                f"{tune.prune_after} steps, but {where}.pruner is none, so no trial is looked at; "
                "set a pruner (successive_halving or hyperband) or drop prune_after",
            )
        return
    if "training.max_steps" in tune.search:
        raise SpecError(
            file,
            f"{where}.pruner",
            f"{tune.pruner} compares trials at the same step, but training.max_steps is searched; "
            "search it with pruner: none",
        )
    if steps is None:
        return
    first = prune_after(tune, steps)
    if first >= steps:
        given = f"{first}" if tune.prune_after else f"{first} (unset: a tenth of the steps, at least 1)"
        raise SpecError(
            file,
            f"{where}.prune_after",
            f"{given} is not below a trial's {steps} optimizer steps, so no trial would be looked at "
            f"before its last step; set prune_after below {steps}, or train trials longer (tune.steps)",
        )


def _check_space(space: SearchSpace, kind: type, file: Path | None, key: str) -> None:
    ranged = space.low is not None or space.high is not None
    if ranged and space.values:
        raise SpecError(file, key, "give a range (low, high) or values, not both")
    if not ranged and not space.values:
        raise SpecError(file, key, "expected a range {low: ..., high: ...} or a list of values")
    if space.values:
        dupes = sorted({v for v in space.values if space.values.count(v) > 1})
        if dupes:
            raise SpecError(file, f"{key}.values", f"listed twice: {', '.join(map(str, dupes))}")
        if kind is int and not all(float(v).is_integer() for v in space.values):
            raise SpecError(file, f"{key}.values", "this key takes whole numbers")
        return
    if space.low is None or space.high is None:
        missing = "low" if space.low is None else "high"
        raise SpecError(file, f"{key}.{missing}", "a range needs both low and high")
    if space.low >= space.high:
        raise SpecError(file, key, f"low ({space.low:g}) must be below high ({space.high:g})")
    if space.log and space.low <= 0:
        raise SpecError(
            file, f"{key}.low", f"{space.low:g} on a log scale: both ends must be above 0 (or set log: false)"
        )


def method_search(tune: TuneSettings, method: MethodSpec, file: Path | None) -> TuneSettings:
    """The search ``method`` runs: its resolved block, its adapter keys checked against its tuner."""
    mine = resolved(tune, method.name, file)
    where = f"tune.methods.{method.name}" if method.name in tune.methods else "tune"
    adapter = {name.partition(".")[2]: 1 for name in mine.search if name.startswith("adapter.")}
    if adapter:
        if not method.is_peft:
            raise SpecError(
                file,
                f"{where}.search",
                f"method {method.name!r} (tuner {method.tuner}) has no adapter keys to search",
            )
        peft_keywords.check_adapter(method.tuner, adapter, file, key=f"{where}.search.adapter")
    return mine


def check_objective(tune: TuneSettings, task: TaskSpec, reported: Sequence[str], file: Path | None) -> None:
    """The objective is ``loss`` or one of the metrics ``task`` reports (``reported``)."""
    metric = tune.objective.metric
    if metric != LOSS and metric not in reported:
        raise SpecError(
            file,
            "tune.objective.metric",
            f"task {task.name!r} does not report {metric!r}; it reports {', '.join([LOSS, *reported])}",
        )
    if metric not in (LOSS, *BUILT_IN_METRICS) and tune.objective.direction == "auto":
        raise SpecError(
            file,
            "tune.objective.direction",
            f"{metric!r} is not a built-in metric, so its direction is unknown; set maximize or minimize",
        )


def grid_values(space: SearchSpace, points: int, kind: type = float) -> tuple[float, ...]:
    """The values a grid tries for one key: the listed ones, or ``points`` from ``low`` to
    ``high`` inclusive, evenly spaced on the space's scale (rounded to 3 significant digits,
    whole numbers for an integer key), each once.

    >>> grid_values(SearchSpace(low=1e-4, high=1e-2), 5)
    (0.0001, 0.000316, 0.001, 0.00316, 0.01)
    >>> grid_values(SearchSpace(low=1, high=10, log=False), 4, int)
    (1, 4, 7, 10)
    """
    if space.values:
        return tuple(kind(v) for v in space.values)
    assert space.low is not None and space.high is not None
    if space.log:
        lo, hi = math.log(space.low), math.log(space.high)
        raw = [math.exp(lo + (hi - lo) * i / (points - 1)) for i in range(points)]
    else:
        raw = [space.low + (space.high - space.low) * i / (points - 1) for i in range(points)]
    if kind is int:
        return tuple(dict.fromkeys(round(v) for v in raw))
    return tuple(dict.fromkeys(float(f"{v:.3g}") for v in raw))


def key_kind(name: str, tuner: str | None = None) -> type:
    """int or float: the type a searched key's values take (an adapter keyword's, from the
    annotation in ``tuner``'s peft config class: ``r: int`` takes whole numbers)."""
    import ast

    section, _, field_name = name.partition(".")
    if section == "training":
        return _numeric_training_keys()[field_name]
    annotation = (peft_keywords.config_annotations(tuner) or ("", {}))[1].get(field_name) if tuner else None
    return int if annotation is not None and ast.unparse(annotation) == "int" else float


def search_grid(tune: TuneSettings, tuner: str | None = None) -> dict[str, list[Any]]:
    """Every searched key with the values the grid tries (Optuna's GridSampler takes this)."""
    return {
        name: list(grid_values(space, tune.points, key_kind(name, tuner)))
        for name, space in tune.search.items()
    }


def apply_values(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's values split into (training keys, adapter keys), ready to merge into a case."""
    training = {k.partition(".")[2]: v for k, v in values.items() if k.startswith("training.")}
    adapter = {k.partition(".")[2]: v for k, v in values.items() if k.startswith("adapter.")}
    return training, adapter
