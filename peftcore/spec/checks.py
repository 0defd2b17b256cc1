"""Rules a spec must keep that span several keys (a field annotation cannot say them).

Run on every spec when it loads (:class:`peftcore.spec.store.SpecStore`), so each mistake is
one line at collection and in ``peftcore list``, naming the file and the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError, suggest
from peftcore.spec import peft_keywords
from peftcore.spec.schema import build
from peftcore.spec.templates import check_templates
from peftcore.spec.trainer_names import accepted
from peftcore.spec.tuning import check_tune
from peftcore.spec.types import SECTION, DataSizes, ProfileSpec, TaskSpec, TrainingBudget
from peftcore.vocab.metrics import BUILT_IN_METRICS, EVALUATOR_METRICS, TASK_INPUTS, judged_metrics
from peftcore.vocab.record import METRIC_BLOCKS
from peftcore.vocab.variants import parse_variant


def check_spec(kind: str, spec: Any) -> None:
    """Rules that span keys (a type annotation cannot say them)."""
    file = spec.file
    if kind == "methods":
        peft_keywords.check_adapter(spec.tuner, spec.adapter, file)
        _check_training(file, spec.training)
        processes = spec.training.get("processes")
        if not spec.trains and isinstance(processes, int) and processes > 1:
            raise SpecError(
                file,
                "training.processes",
                f"{processes} processes, but tuner none does not train; processes is for a method "
                "that trains (remove the key)",
            )
        if spec.tuner == "full" and spec.base.quantization != "none":
            raise SpecError(
                file,
                "base.quantization",
                "full fine-tuning cannot train quantized weights; use a peft tuner over them (as QLoRA does)",
            )
    elif kind == "models":
        src = spec.source
        need = {"hub": ("id",), "local": ("path",), "gguf_package": ("package", "module", "file")}[src.kind]
        for key in need:
            if getattr(src, key) is None:
                raise SpecError(file, f"source.{key}", f"required when source.kind is {src.kind!r}")
        if src.sha256 is not None and (len(src.sha256) != 64 or not _is_hex(src.sha256)):
            raise SpecError(file, "source.sha256", "expected 64 hexadecimal characters")
        for index, part in enumerate(src.parts):
            module, _, relative = part.partition(":")
            if not module or not relative:
                raise SpecError(
                    file, f"source.parts[{index}]", f"expected 'module:path/in/module', got {part!r}"
                )
        if src.parts and src.sha256 is None:
            raise SpecError(file, "source.sha256", "required with source.parts: it checks the assembled file")
        for tuner, keywords in spec.adapter_overrides.items():
            where = f"adapter_overrides.{tuner}"
            peft_keywords.check_adapter(tuner, keywords, file, key=where, tuner_key=where)
    elif kind == "tasks":
        src = spec.source
        need = {"package": ("package", "module", "path"), "local": ("path",), "hub": ("id",)}[src.kind]
        for key in need:
            if getattr(src, key) is None:
                raise SpecError(file, f"source.{key}", f"required when source.kind is {src.kind!r}")
        for ours, where in spec.fields.items():
            paths = where if isinstance(where, tuple) else (where,)
            if not paths or not all(isinstance(p, str) and p for p in paths):
                raise SpecError(
                    file,
                    f"fields.{ours}",
                    f"expected a dotted path in a record or a list of them, got {where!r:.60}",
                )
        check_templates(spec)
        check_metrics(spec)
        spec.expect.check_names(file, spec.metrics)
        check_bounds_reported(spec)
        _check_training(file, spec.training)
    elif kind == "profiles":
        _check_training(file, spec.training)
        for axis in ("methods", "models", "tasks"):
            if not getattr(spec, axis):
                raise SpecError(file, axis, f"empty list: a profile needs at least one {SECTION[axis]}")
            names = getattr(spec, axis)
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise SpecError(file, axis, f"listed twice: {', '.join(dupes)}")
        check_sizes(spec.data, file)
        spec.expect.check_names(file)
        for i, grid in enumerate(spec.grids):
            _check_grid(file, f"grids[{i}]", grid)
        _check_off_task(spec)
        _check_deploy(spec)
        check_tune(spec)


def _check_deploy(profile: ProfileSpec) -> None:
    """Every ``deploy.variants`` name is one peftcore can build (peftcore.vocab.variants), once."""
    names = profile.deploy.variants
    for index, name in enumerate(names):
        try:
            parse_variant(name)
        except ValueError as err:
            raise SpecError(profile.file, f"deploy.variants[{index}]", str(err)) from None
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SpecError(profile.file, "deploy.variants", f"listed twice: {', '.join(dupes)}")


def _check_off_task(profile: ProfileSpec) -> None:
    """``eval.also_score`` names each task once, and a gate on a score outside the task names a
    score the profile measures (a gate that never applies would be silently off). Whether the
    names are tasks is checked where they are resolved (:func:`peftcore.spec.cases.expand`)."""
    file, also = profile.file, profile.eval.also_score
    dupes = sorted({n for n in also if also.count(n) > 1})
    if dupes:
        raise SpecError(file, "eval.also_score", f"listed twice: {', '.join(dupes)}")
    gated = [(f"expect.{b.written}", b.quantity) for b in profile.expect.bounds]
    gated += [(f"compare[{r.index}]", r.quantity) for r in profile.compare.rules]
    for key, quantity in gated:
        task = quantity.ood_task
        if task is not None and task not in also:
            raise SpecError(
                file, key, f"{quantity.label} names task {task!r}, which eval.also_score does not list"
            )
        if quantity.block == "general_text" and profile.eval.forgetting is None:
            raise SpecError(file, key, f"{quantity.label} is measured only with eval.forgetting set")


def _check_grid(file: Path | None, where: str, grid: Any) -> None:
    if not isinstance(grid, Mapping) or not grid:
        raise SpecError(file, where, "expected a mapping with methods, models and/or tasks")
    for axis, names in grid.items():
        if axis not in ("methods", "models", "tasks"):
            raise SpecError(file, f"{where}.{axis}", "unknown key; expected methods, models or tasks")
        if not isinstance(names, (list, tuple)) or not names or not all(isinstance(n, str) for n in names):
            raise SpecError(file, f"{where}.{axis}", f"expected a non-empty list of {SECTION[axis]} names")


def _check_training(file: Path | None, training: Mapping[str, Any]) -> None:
    """A partial training budget: every key known and of the right type, where it is written.

    (Merged into a full budget only at expansion, where a wrong value could not be traced back to
    the file that set it.) ``null`` means "not set here".
    """
    budget = {k: v for k, v in training.items() if v is not None}
    build(TrainingBudget, budget, file, "training")
    for kind in ("optimizer", "lr_scheduler"):
        check_trainer_name(kind, budget.get(kind), file)
    check_report_to(budget.get("report_to"), file)


# Tuners that fail in training with training.parallelism: fsdp (peftcore 2 CPU processes, torch
# 2.13, peft 0.21), and the error each raised.
FSDP_FAILS = {
    "prompt_tuning": "its virtual-token embedding is outside the sharded layers: "
    "'aten.embedding.default got mixed torch.Tensor and DTensor'",
    "prefix_tuning": "its virtual-token embedding is outside the sharded layers: "
    "'aten.embedding.default got mixed torch.Tensor and DTensor'",
    "adalora": "its rank allocation reads the sharded weights as whole ones: "
    "'The size of tensor a (16) must match the size of tensor b (32)'",
}


def check_budget(budget: TrainingBudget, file: str | Path | None, tuner: str | None = None) -> None:
    """Rules of a resolved budget whose keys may come from different files (``file`` is where
    the budget was resolved: the profile), for a method with ``tuner``."""
    if budget.parallelism == "fsdp" and tuner in FSDP_FAILS:
        raise SpecError(
            file,
            "training.parallelism",
            f"fsdp with tuner {tuner} fails in training ({FSDP_FAILS[tuner]}); use parallelism ddp",
        )
    if budget.parallelism == "fsdp" and budget.processes < 2:
        # One process has no one to share the model with: refused rather than quietly run whole.
        raise SpecError(
            file,
            "training.parallelism",
            f"fsdp shards the model over training.processes, which is {budget.processes}; "
            "expected processes 2 or more, or remove the key",
        )
    if budget.processes > 1 and budget.report_to:
        raise SpecError(
            file,
            "training.report_to",
            f"{', '.join(budget.report_to)} with training.processes {budget.processes} is not built yet "
            "(the trackers log from the session's process, which does not train then); drop one of the two",
        )


# training.report_to: the experiment trackers peftcore logs a case to, and the module each needs.
TRACKER_MODULES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def check_report_to(names: object, file: str | Path | None) -> None:
    """SpecError for a tracker peftcore does not log to, or one that is not installed (found
    without importing it, so collection stays light)."""
    import importlib.util

    for name in names if isinstance(names, (list, tuple)) else ():
        if name not in TRACKER_MODULES:
            raise SpecError(
                file,
                "training.report_to",
                f"unknown tracker {name!r}; expected any of {', '.join(TRACKER_MODULES)}",
            )
        if importlib.util.find_spec(TRACKER_MODULES[name]) is None:
            raise SpecError(
                file, "training.report_to", f"{name} is not installed (pip install 'peftcore[{name}]')"
            )


def check_trainer_name(kind: str, name: object, file: str | Path | None) -> None:
    """SpecError for an optimizer or schedule name transformers' Trainer would refuse."""
    names = accepted(kind)
    if isinstance(name, str) and names and name not in names:
        raise SpecError(
            file, f"training.{kind}", f"transformers has no {kind} {name!r}; " + suggest(name, names)
        )


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in text)


def check_sizes(sizes: DataSizes, file: str | Path | None, prefix: str = "data") -> None:
    """Split sizes that can hold: ``seen`` is drawn from ``train``."""
    if sizes.seen > sizes.train:
        raise SpecError(file, f"{prefix}.seen", f"seen ({sizes.seen}) is drawn from train ({sizes.train})")


def check_metrics(task: TaskSpec) -> None:
    """Every metric a task names exists and takes what the task's evaluator gives.

    A built-in metric declares its inputs (peftcore.vocab.metrics); a name that is not built in
    is an ``evaluate`` metric: a module file by path, or a name on the hub, which needs a
    network (refused here when the run is offline, as pytest runs are unless --allow-network).
    """
    for index, name in enumerate(task.metrics):
        key = f"metrics[{index}]"
        metric = BUILT_IN_METRICS.get(name)
        if metric is not None:
            if metric.inputs not in TASK_INPUTS[task.type]:
                fitting = sorted(
                    m for m, info in BUILT_IN_METRICS.items() if info.inputs in TASK_INPUTS[task.type]
                )
                raise SpecError(
                    task.file,
                    key,
                    f"{name!r} scores {metric.inputs}, which a {task.type} task does not give; "
                    f"metrics for {task.type}: {', '.join(fitting)}",
                )
            continue
        module = name.rpartition(":")[0] or name
        if module.endswith(".py") or Path(module).expanduser().exists():
            continue  # a local evaluate module: loaded (and checked) when the case starts
        if offline():
            raise SpecError(
                task.file,
                key,
                f"unknown metric {name!r}; "
                + suggest(name, BUILT_IN_METRICS)
                + " (a hub `evaluate` metric needs "
                "a network: --allow-network; offline, name a local module file)",
            )


def reported_metrics(task: TaskSpec, *, judge: bool | None = None) -> tuple[str, ...]:
    """The metrics a case of ``task`` reports on its held-out and seen splits, in order.

    The task's own, what its evaluator adds whatever the task lists (:mod:`peftcore.vocab.metrics`:
    ``accuracy`` and ``accuracy_norm`` for choices, ``perplexity`` for language modelling;
    ``number_unparseable_rate`` next to ``abs_diff``, :mod:`peftcore.score.generation`), and on a
    generation task the LLM judge's scores when the profile sets ``eval.judge`` (``judge`` None:
    not known yet, counted as possible). A judged metric the task lists is reported only then.
    """
    judged = judged_metrics()
    judge_on = task.type == "generation" and judge is not False
    names = [*EVALUATOR_METRICS[task.type], *(m for m in task.metrics if judge_on or m not in judged)]
    if "abs_diff" in task.metrics:
        names.append("number_unparseable_rate")
    if judge_on:
        names.extend(judged)
    return tuple(dict.fromkeys(names))


def check_bounds_reported(task: TaskSpec, *, judge: bool | None = None) -> None:
    """SpecError for a task's ``expect:`` bound on a metric its cases never report (the gate
    would find it not applicable and pass it unchecked), naming the metrics they do report."""
    reported = reported_metrics(task, judge=judge)
    for bound in task.expect.bounds:
        quantity = bound.quantity
        if quantity.block in METRIC_BLOCKS and quantity.name != "primary" and quantity.name not in reported:
            raise SpecError(
                task.file,
                f"expect.{bound.written}",
                f"task {task.name} never reports {quantity.name}, so this bound would never be checked; "
                f"expected one of the metrics it reports: {describe_reported(task, judge=judge)}",
            )


def describe_reported(task: TaskSpec, *, judge: bool | None) -> str:
    """``reported_metrics`` in words: the judge's scores named apart when they depend on a profile."""
    always = reported_metrics(task, judge=judge is True)
    judged = [name for name in reported_metrics(task, judge=None) if name not in always]
    return ", ".join(always) + (f" (and {', '.join(judged)} with a profile's eval.judge)" if judged else "")


def offline() -> bool:
    """Whether hub access is off (peftcore's own runs set HF_HUB_OFFLINE unless --allow-network)."""
    import os

    return any(
        os.environ.get(name, "").lower() in ("1", "true", "yes", "on")
        for name in ("HF_HUB_OFFLINE", "HF_EVALUATE_OFFLINE")
    )
