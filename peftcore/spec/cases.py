"""A profile expanded into cases: one (method, model, task[, seed]) with its resolved budget.

Resolution order for the training budget, later wins:
``defaults.training`` < task ``training`` < profile ``training`` < method ``training``
< command-line overrides. (A task may need longer sequences; the profile sets the budget; a
method may need its own learning rate; the command line is a quick try.)
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import SpecError
from peftcore.spec.checks import (
    check_budget,
    check_sizes,
    reported_metrics,
)
from peftcore.spec.grid_checks import check_gates_match, check_gates_reported, deployed_cells
from peftcore.spec.loader import deep_merge
from peftcore.spec.schema import build, freeze, plain
from peftcore.spec.store import SpecStore
from peftcore.spec.tuning import apply_values, check_objective, check_pruning, method_search, search_grid
from peftcore.spec.types import (
    DataSizes,
    DeploySettings,
    EvalSettings,
    MethodSpec,
    ModelSpec,
    ProfileSpec,
    TaskSpec,
    TrainingBudget,
    TuneSettings,
)


@dataclass(frozen=True)
class Tuning:
    """A case's part in its method's search (profile ``tune:``, :mod:`peftcore.spec.tuning`).

    A ``trial`` trains with ``values`` (a grid point; a TPE trial's are drawn when it runs) for
    the search's steps and is scored on the tuning split only. A ``tuned`` case is a compared
    run: its searched keys take the values its trials chose, when it runs (``values`` is empty
    until then). A ``default`` case (``tune.compare_default``) is the method's plain run at its
    own values, kept beside the tuned runs so the report can rank methods at both; its identity
    leaves the search out (:mod:`peftcore.pipeline.identity`), since nothing searched changes it.
    """

    kind: Literal["trial", "tuned", "default"]
    search: TuneSettings  # the method's resolved search
    study: str  # <method>-<model>-<task>: the study its trials belong to
    index: int = 0  # a trial's number in the study (grid: its grid point)
    values: Mapping[str, Any] = field(default_factory=dict)  # searched key -> value
    # A tuned case's choice, once made (peftcore.pipeline.tuning.choose): the trials it read,
    # their objectives, what was chosen and why. In the record, not in the case's identity.
    choice: Mapping[str, Any] = field(default_factory=dict, compare=False, metadata={"internal": True})
    # The searched keys at the method's own values (what it trains with unsearched; None: the
    # peft config class's default). In the record, for the report's default-vs-tuned table; not
    # in the identity, since the spec the case trains with is hashed already.
    defaults: Mapping[str, Any] = field(default_factory=dict, compare=False, metadata={"internal": True})


@dataclass(frozen=True)
class Case:
    """Everything that determines one benchmark case's result."""

    profile: str
    method: MethodSpec
    model: ModelSpec
    task: TaskSpec
    training: TrainingBudget
    data: DataSizes
    eval: EvalSettings
    seed_suffix: bool = False  # several seeds in one session: the id names the seed
    # Where the split sizes were set (the profile's file, or "command line"), for an error about
    # sizes the data cannot meet. Not part of the spec.
    sizes_from: str = field(default="", compare=False)
    # Scored outside the task (eval.forgetting, eval.also_score), resolved: the general text and
    # the other tasks (never the case's own), see peftcore.pipeline.off_task.
    general_text: TaskSpec | None = None
    also_score: tuple[TaskSpec, ...] = ()
    # Deployment variants built from the trained case (profile deploy:), see peftcore.deploy.
    deploy: DeploySettings = field(default_factory=DeploySettings)
    tuning: Tuning | None = None  # a trial of a search, or a compared run at the values it chose

    @property
    def case_id(self) -> str:
        base = f"{self.method.name}-{self.model.name}-{self.task.name}"
        if self.tuning is not None and self.tuning.kind == "trial":
            return self.trial_id(self.tuning.index)
        if self.tuning is not None and self.tuning.kind == "tuned":
            base += "-tuned"
        return f"{base}-seed{self.training.seed}" if self.seed_suffix else base

    @property
    def variant_key(self) -> tuple[str, str, bool, str]:
        """What makes two cases share a loaded base model."""
        base = self.method.base
        return (self.model.name, base.quantization, base.double_quant, base.compute_dtype)

    def resolved(self) -> dict[str, Any]:
        """The fully resolved spec as plain data (for records and the content hash)."""
        return {
            "profile": self.profile,
            "method": plain(self.method),
            "model": plain(self.model),
            "task": plain(self.task),
            "training": plain(self.training),
            "data": plain(self.data),
            "eval": plain(self.eval),
            **({"general_text": plain(self.general_text)} if self.general_text else {}),
            **({"also_score": {t.name: plain(t) for t in self.also_score}} if self.also_score else {}),
            **({"deploy": plain(self.deploy)} if self.deploy.variants else {}),
            **({"tuning": plain(self.tuning)} if self.tuning is not None else {}),
        }

    def trial_id(self, index: int) -> str:
        """The id of trial ``index`` of this case's search."""
        return f"{self.method.name}-{self.model.name}-{self.task.name}-trial{index}"

    def with_values(self, values: Mapping[str, Any], choice: Mapping[str, Any] | None = None) -> Case:
        """This case with searched keys set (``training.<key>`` and ``adapter.<keyword>``), and
        for a tuned case the choice that set them."""
        assert self.tuning is not None
        training, adapter = apply_values(values)
        method = self.method
        if adapter:
            method = dataclasses.replace(method, adapter=freeze({**method.adapter, **adapter}))
        return dataclasses.replace(
            self,
            method=method,
            training=dataclasses.replace(self.training, **training),
            tuning=dataclasses.replace(
                self.tuning,
                values=freeze(dict(values)),
                choice=self.tuning.choice if choice is None else choice,
            ),
        )


def resolve_training(
    store: SpecStore,
    profile: ProfileSpec | None,
    method: MethodSpec,
    task: TaskSpec | None,
    overrides: Mapping[str, Any] | None = None,
) -> TrainingBudget:
    """The budget of one (method, task) pair in ``profile``; ``overrides`` come from the command line.

    The layers are those of the module docstring; a ``None`` profile or task is a layer left
    out (the planner estimates a method before a task is chosen). Each spec's own ``training:``
    block was checked where it is written (at load); a bad command-line value is reported as such.
    """
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    build(TrainingBudget, given, "command line", "training")
    merged: dict[str, Any] = dict(store.defaults.get("training", {}))
    layers = [task.training if task else {}, profile.training if profile else {}, method.training, given]
    for layer in layers:
        merged = deep_merge(merged, {k: v for k, v in layer.items() if v is not None})
    where = profile.file if profile is not None else method.file
    budget: TrainingBudget = build(TrainingBudget, merged, where, "training")
    if method.trains:
        check_budget(budget, where, method.tuner)
    return budget


def expand(
    store: SpecStore,
    profile_name: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    data_overrides: Mapping[str, Any] | None = None,
    seeds: Iterable[int] | None = None,
) -> list[Case]:
    """Every case of a profile, ordered so that each base-model variant loads once."""
    profile: ProfileSpec = store.get("profiles", profile_name)
    grids = [{"methods": profile.methods, "models": profile.models, "tasks": profile.tasks}]
    grids += [{**grids[0], **grid} for grid in profile.grids]
    methods: dict[str, MethodSpec] = {}
    models: dict[str, ModelSpec] = {}
    tasks: dict[str, Any] = {}
    for i, grid in enumerate(grids):
        where = "" if i == 0 else f"grids[{i - 1}]."
        # each name resolved once, however many grids list it
        for n in (n for n in grid["methods"] if n not in methods):
            methods[n] = _method(store, profile, n, where)
        for n in (n for n in grid["models"] if n not in models):
            models[n] = _named(store, profile, "models", n, where)
        for n in (n for n in grid["tasks"] if n not in tasks):
            tasks[n] = _named(store, profile, "tasks", n, where)
    # (model, method, task) in grid order, each once however many grids name it
    cells = list(
        dict.fromkeys(
            (model, method, task)
            for g in grids
            for model in g["models"]
            for method in g["methods"]
            for task in g["tasks"]
        )
    )
    data = profile.data
    if data_overrides:
        data = build(DataSizes, deep_merge(plain(data), dict(data_overrides)), "command line", "data")
        check_sizes(data, "command line")
    _check_training_data(profile, methods, cells, data, bool(data_overrides and "train" in data_overrides))
    general_text, also_score = _off_task_specs(store, profile)
    deployed = deployed_cells(profile, methods, cells)
    check_gates_match(profile, [*cells, *deployed])
    check_gates_reported(profile, tasks, [*cells, *deployed], also_score)
    searches: dict[str, TuneSettings] = {}
    if profile.tune.enabled:
        for _, method, task in cells:
            if methods[method].trains:
                searches[method] = method_search(profile.tune, methods[method], profile.file)
                check_objective(searches[method], tasks[task], reported_metrics(tasks[task]), profile.file)
        if not seeds:  # the compared runs of a search get its seeds, unless the command line says
            seeds = range(profile.tune.seeds) if profile.tune.seeds > 1 else None
    seed_list = list(seeds) if seeds else [None]
    # The budget does not depend on the model: resolve it once per (method, task).
    budgets = {
        (method, task): resolve_training(store, profile, methods[method], tasks[task], overrides)
        for method, task in dict.fromkeys((method, task) for _, method, task in cells)
    }
    cases = []
    for model, method, task in cells:
        budget = budgets[method, task]
        cell = []
        for seed in seed_list:
            training = budget if seed is None else dataclasses.replace(budget, seed=seed)
            cell.append(
                Case(
                    profile=profile.name,
                    method=apply_model_overrides(methods[method], models[model]),
                    model=models[model],
                    task=tasks[task],
                    training=training,
                    data=data,
                    eval=profile.eval,
                    seed_suffix=len(seed_list) > 1,
                    sizes_from="command line" if data_overrides else str(profile.file),
                    general_text=general_text,
                    also_score=tuple(t for t in also_score if t.name != task),
                    # The case keeps the variants, not the profile's choice of cases.
                    deploy=(
                        dataclasses.replace(profile.deploy, methods=(), tasks=())
                        if profile.deploy.applies(method, task)
                        else DeploySettings()
                    ),
                )
            )
        where = f"tune.methods.{method}" if method in profile.tune.methods else "tune"
        cases += _with_search(cell, searches.get(method), profile.file, where)
    cases.sort(key=_order)
    return cases


def _with_search(
    cell: list[Case], search: TuneSettings | None, file: Path | None = None, where: str = "tune"
) -> list[Case]:
    """The cases of one (model, method, task), one per seed, with the method's search if it has
    one: its trials (one per grid point, or ``trials`` for TPE; trained once, with the first
    seed), then the compared runs, ``tuned``, at the values the trials chose; with
    ``compare_default``, the plain runs at the method's own values too, one per seed.

    A pruned search's trials are checked here, where their steps are known (``file`` and
    ``where``, the search's block, name the key at fault)."""
    if search is None:
        return cell
    case = cell[0]
    check_pruning(search, search.steps or case.training.max_steps, file, where)
    if search.pruner != "none" and case.training.processes > 1:
        raise SpecError(
            file,
            f"{where}.pruner",
            f"a trial trained over {case.training.processes} processes cannot be pruned yet (its "
            "tuning-split loss is scored in the session's process); set training.processes: 1 "
            "or pruner: none",
        )
    study = f"{case.method.name}-{case.model.name}-{case.task.name}"
    own = _own_values(case, search)
    tuned = [dataclasses.replace(c, tuning=Tuning("tuned", search, study, defaults=own)) for c in cell]
    if search.compare_default:
        tuned += [
            dataclasses.replace(c, tuning=Tuning("default", search, study, values=own, defaults=own))
            for c in cell
        ]
    trial_base = dataclasses.replace(
        case,
        training=dataclasses.replace(case.training, max_steps=search.steps or case.training.max_steps),
        seed_suffix=False,
        general_text=None,
        also_score=(),
        deploy=DeploySettings(),
    )
    if search.sampler == "grid":
        grid = search_grid(search, case.method.tuner)
        points = [dict(zip(grid, combo, strict=True)) for combo in itertools.product(*grid.values())]
    else:
        points = [{} for _ in range(search.trials)]
    trials = []
    for index, values in enumerate(points):
        trial = dataclasses.replace(trial_base, tuning=Tuning("trial", search, study, index, defaults=own))
        trials.append(trial.with_values(values) if values else trial)
    return [*trials, *tuned]


def _own_values(case: Case, search: TuneSettings) -> dict[str, Any]:
    """Each searched key at the value ``case`` trains with unsearched (an adapter keyword the
    method's file leaves out: None, the peft config class's default)."""
    own: dict[str, Any] = {}
    for name in search.search:
        section, _, key = name.partition(".")
        own[name] = getattr(case.training, key) if section == "training" else case.method.adapter.get(key)
    return own


def _off_task_specs(store: SpecStore, profile: ProfileSpec) -> tuple[TaskSpec | None, list[TaskSpec]]:
    """The task specs ``eval.forgetting.task`` and ``eval.also_score`` name; SpecError naming the
    profile and key for an unknown name, or general text that is not a language_modeling task."""

    def task(name: str, key: str) -> TaskSpec:
        try:
            spec: TaskSpec = store.get("tasks", name)
        except SpecError as err:
            if err.file is None:  # an unknown name: the profile is the file at fault
                raise SpecError(profile.file, key, err.expected) from None
            raise
        return spec

    forgetting = profile.eval.forgetting
    general = task(forgetting.task, "eval.forgetting.task") if forgetting else None
    if general is not None and general.type != "language_modeling":
        raise SpecError(
            profile.file,
            "eval.forgetting.task",
            f"{general.name!r} is a {general.type} task; forgetting is measured on general text, "
            "a language_modeling task (e.g. coqa_passages)",
        )
    return general, [task(n, f"eval.also_score[{i}]") for i, n in enumerate(profile.eval.also_score)]


def _check_training_data(
    profile: ProfileSpec,
    methods: Mapping[str, MethodSpec],
    cells: Iterable[tuple[str, str, str]],
    data: DataSizes,
    from_command_line: bool,
) -> None:
    """``data.train: 0`` (and ``seen: 0``) is for scoring only: every method must be untrained."""
    if data.train > 0:
        return
    training = sorted({method for _, method, _ in cells if methods[method].trains})
    if training:
        where = "command line" if from_command_line else profile.file
        key = "--train-size" if from_command_line else "data.train"
        raise SpecError(
            where,
            key,
            f"0 examples to train on, but {', '.join(training)} train; "
            "0 is for a profile whose methods are all untrained (base), to score a whole split",
        )


def _order(case: Case) -> tuple[Any, ...]:
    """Group by loaded base variant (full precision first), the reference row first within."""
    model, quantization, double_quant, compute = case.variant_key
    return (
        model,
        quantization != "none",
        quantization,
        double_quant,
        compute,
        case.method.trains,
        case.method.name,
        case.task.name,
        # a default run, the trials, then the tuned runs after the trials that choose for them
        ("default", "trial", "tuned").index(case.tuning.kind) if case.tuning is not None else 0,
        case.tuning.index if case.tuning is not None else 0,
        case.training.seed,
    )


def _method(store: SpecStore, profile: ProfileSpec, name: str, where: str = "") -> MethodSpec:
    if name in profile.variants:
        return store.method_variant(profile, name)
    return _named(store, profile, "methods", name, where)


def _named(store: SpecStore, profile: ProfileSpec, kind: str, name: str, where: str = "") -> Any:
    """``where`` prefixes the key in an error: "" for the profile's own lists, "grids[0]." ..."""
    try:
        return store.get(kind, name)
    except SpecError as err:
        if err.file is None:  # an unknown name: the profile is the file at fault
            raise SpecError(profile.file, where + kind, err.expected) from None
        raise


def apply_model_overrides(method: MethodSpec, model: ModelSpec) -> MethodSpec:
    """A model may adjust a tuner's keywords that cannot apply to its shapes (see ModelSpec)."""
    extra = model.adapter_overrides.get(method.tuner) if method.is_peft else None
    if not extra:
        return method
    return dataclasses.replace(method, adapter=freeze(deep_merge(method.adapter, extra)))
