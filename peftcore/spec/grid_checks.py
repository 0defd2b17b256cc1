"""A profile's gates checked against its grid before any case runs: a ``compare:`` rule or an
``expect:`` bound that matches no case, or names a metric none of its cases reports, would be a
gate silently off. Cells are ``(model, method, task)``; a deployment variant's method is
``lora@nf4``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from peftcore.errors import SpecError, suggest
from peftcore.spec.checks import check_bounds_reported, describe_reported, reported_metrics
from peftcore.spec.gates import matches
from peftcore.spec.types import MethodSpec, ProfileSpec, TaskSpec
from peftcore.vocab.quantities import Quantity
from peftcore.vocab.record import METRIC_BLOCKS
from peftcore.vocab.variants import mergeable, split_variant_method, variant_method


def deployed_cells(
    profile: ProfileSpec, methods: Mapping[str, MethodSpec], cells: Iterable[tuple[str, str, str]]
) -> list[tuple[str, str, str]]:
    """The grid's deployment variants as cells (``lora@nf4``), for gates that name them. A rule
    naming a variant of a method whose tuner cannot merge is an error: it could never apply."""
    variants = profile.deploy.variants
    for rule in profile.compare.rules:
        for key, name in [("case", c) for c in rule.cases] + [("baseline", rule.baseline)]:
            method, variant = split_variant_method(name)
            if variant is not None and method in methods and not mergeable(methods[method].tuner):
                raise SpecError(
                    profile.file,
                    f"compare[{rule.index}].{key}",
                    f"{name!r}: {methods[method].tuner} cannot merge (virtual tokens), so {method} has "
                    "no deployment variants; name a mergeable method",
                )
            chosen = profile.deploy.methods
            if variant is not None and chosen and method not in chosen:
                raise SpecError(
                    profile.file,
                    f"compare[{rule.index}].{key}",
                    f"{name!r}: deploy.methods ({', '.join(chosen)}) does not give {method} variants",
                )
            if variant is not None and variant not in variants:
                raise SpecError(
                    profile.file,
                    f"compare[{rule.index}].{key}",
                    f"{name!r}: variant {variant!r} is not in deploy.variants; "
                    + suggest(variant, variants or ["(none listed)"]),
                )
    for key, names, known in (
        ("deploy.methods", profile.deploy.methods, {method for _, method, _ in cells}),
        ("deploy.tasks", profile.deploy.tasks, {task for _, _, task in cells}),
    ):
        for index, name in enumerate(names):
            if name not in known:
                expected = f"{name!r} is not in the profile's grid; {suggest(name, known)}"
                raise SpecError(profile.file, f"{key}[{index}]", expected)
    return [
        (model, variant_method(method, variant), task)
        for model, method, task in cells
        if mergeable(methods[method].tuner) and profile.deploy.applies(method, task)
        for variant in variants
    ]


def check_gates_match(profile: ProfileSpec, cells: Iterable[tuple[str, str, str]]) -> None:
    """A ``compare:`` rule (or a bound's ``methods:``) that matches no case of the profile would
    never be checked: the gate would be silently off. One line naming the rule and the name."""
    cells = list(cells)
    methods = sorted({method for _, method, _ in cells})
    tasks = sorted({task for _, _, task in cells})
    models = sorted({model for model, _, _ in cells})
    for rule in profile.compare.rules:
        key = f"compare[{rule.index}]"
        if rule.baseline not in methods:
            raise SpecError(
                profile.file,
                f"{key}.baseline",
                f"no method {rule.baseline!r} in this profile; " + suggest(rule.baseline, methods),
            )
        for axis, patterns, names in (
            ("case", rule.cases, methods),
            ("task", rule.tasks, tasks),
            ("model", rule.models, models),
        ):
            for pattern in patterns:
                if not matches_any(pattern, names):
                    raise SpecError(
                        profile.file,
                        f"{key}.{axis}",
                        f"{pattern!r} matches no {axis if axis != 'case' else 'method'} of this profile; "
                        + suggest(pattern, names),
                    )
        pairs = {(model, task) for model, method, task in cells if method == rule.baseline}
        checked = [
            (model, method, task)
            for model, method, task in cells
            if method != rule.baseline
            and matches(method, rule.cases)
            and (model, task) in pairs
            and (not rule.tasks or matches(task, rule.tasks))
            and (not rule.models or matches(model, rule.models))
        ]
        if not checked:
            raise SpecError(
                profile.file,
                key,
                f"'{rule.describe()}' matches no pair of cases of this profile (a case and "
                f"{rule.baseline} on the same model and task)",
            )
    for bound in profile.expect.bounds:
        for pattern in bound.methods:
            if not matches_any(pattern, methods):
                raise SpecError(
                    profile.file,
                    f"expect.{bound.written}.methods",
                    f"{pattern!r} matches no method of this profile; " + suggest(pattern, methods),
                )


def check_gates_reported(
    profile: ProfileSpec,
    tasks: Mapping[str, TaskSpec],
    cells: Iterable[tuple[str, str, str]],
    also_score: Iterable[TaskSpec],
) -> None:
    """A gate on a metric that no case it applies to reports would pass unchecked (the gates
    find it not applicable): an ``expect:`` bound (the profile's, or a task's) or a ``compare:``
    rule. One line naming the file, the key, and the metrics those cases report."""
    judge = profile.eval.judge is not None
    for task in tasks.values():
        check_bounds_reported(task, judge=judge)
    cells = list(cells)
    off_task = {task.name: task for task in also_score}
    gates: list[tuple[str, Quantity, tuple[str, ...], tuple[str, ...]]] = [
        (f"expect.{b.written}", b.quantity, b.methods, ()) for b in profile.expect.bounds
    ]
    gates += [(f"compare[{r.index}].metric", r.quantity, r.cases, r.tasks) for r in profile.compare.rules]
    for key, quantity, method_patterns, task_patterns in gates:
        if quantity.name == "primary":
            continue
        if quantity.ood_task in off_task:
            task = off_task[quantity.ood_task]
            reported = reported_metrics(task, judge=False)  # the judge scores the case's own task only
            if quantity.name not in reported:
                raise SpecError(
                    profile.file,
                    key,
                    f"task {task.name} (eval.also_score) never reports {quantity.name}, so this would "
                    f"never be checked; expected one of the metrics it reports: {', '.join(reported)}",
                )
            continue
        if quantity.block not in METRIC_BLOCKS:
            continue  # a cost figure (training.final_loss), or general_text's forgetting
        names = sorted(
            {
                task
                for _, method, task in cells
                if (not method_patterns or matches(method, method_patterns))
                and (not task_patterns or matches(task, task_patterns))
            }
        )
        if names and not any(quantity.name in reported_metrics(tasks[n], judge=judge) for n in names):
            described = "; ".join(f"{n}: {describe_reported(tasks[n], judge=judge)}" for n in names)
            raise SpecError(
                profile.file,
                key,
                f"no task this applies to reports {quantity.name}, so it would never be checked; "
                f"expected one of the metrics they report ({described})",
            )


def matches_any(pattern: str, names: Iterable[str]) -> bool:
    return any(matches(name, (pattern,)) for name in names)
