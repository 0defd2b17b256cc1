"""Specs: YAML files -> validated, frozen spec objects -> the cases of a profile.

The public names, importable from here: :class:`SpecStore` (a spec directory), the spec classes,
:func:`expand` (a profile -> its cases), :func:`resolve_training` (a case's budget, layered) and
:func:`apply_model_overrides`. Nothing here imports torch.
"""

from peftcore.spec.cases import Case, apply_model_overrides, expand, resolve_training
from peftcore.spec.gates import Compare, Expect
from peftcore.spec.loader import deep_merge
from peftcore.spec.schema import build, freeze, plain, suggest
from peftcore.spec.store import SpecStore
from peftcore.spec.templates import template_fields
from peftcore.spec.types import (
    DEFAULT_PROFILE,
    KINDS,
    MAX_SEED,
    SECTION,
    BaseOptions,
    DataSizes,
    DataSource,
    EvalSettings,
    ForgettingSettings,
    Generation,
    MethodSpec,
    ModelSource,
    ModelSpec,
    ProfileSpec,
    TaskSpec,
    TrainingBudget,
)

__all__ = [
    "DEFAULT_PROFILE",
    "KINDS",
    "MAX_SEED",
    "SECTION",
    "BaseOptions",
    "Case",
    "Compare",
    "DataSizes",
    "DataSource",
    "EvalSettings",
    "Expect",
    "ForgettingSettings",
    "Generation",
    "MethodSpec",
    "ModelSource",
    "ModelSpec",
    "ProfileSpec",
    "SpecStore",
    "TaskSpec",
    "TrainingBudget",
    "apply_model_overrides",
    "build",
    "deep_merge",
    "expand",
    "freeze",
    "plain",
    "resolve_training",
    "suggest",
    "template_fields",
]
