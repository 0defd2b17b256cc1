"""The planner (``peftcore estimate``): trainable parameters, adapter size and peak training memory
of a method on a model, from the model's config alone.

The model is built on the meta device from its ``config.json`` (no weights, no memory) and the
method is applied to it exactly as the training engine applies it (``apply_method``). What can be
counted is counted on the resulting modules; peak memory is predicted from its parts, each shown
with its formula (``MEMORY_MODEL``). The modules, in the order an estimate uses them:

- ``models``: a model named as on the command line -> its config -> the meta model, made trainable;
- ``files``: the files ``save_pretrained`` would write, and their sizes;
- ``weights``, ``activations``, ``memory``: the memory model; ``overhead``: the framework's cost;
- ``precision``: what ``precision: auto`` means on the device planned for;
- ``estimator``: one estimate (``Estimate``) from all of these;
- ``ladder``: the methods that fit a budget, ordered by the quality stored runs measured;
- ``cli``: the ``peftcore estimate`` command.

Nothing heavy is imported at module level: importing ``peftcore.plan`` stays cheap.
"""

from peftcore.plan.errors import PlannerError
from peftcore.plan.estimator import Estimate, estimate, estimate_for, estimate_model
from peftcore.plan.memory import MEMORY_MODEL, MemoryPart
from peftcore.plan.models import (
    CONFIG_DIR,
    ModelInfo,
    apply_meta,
    build_meta_model,
    resolve_model,
    shipped_models,
)
from peftcore.plan.weights import base_weight_bytes

__all__ = [
    "CONFIG_DIR",
    "MEMORY_MODEL",
    "Estimate",
    "MemoryPart",
    "ModelInfo",
    "PlannerError",
    "apply_meta",
    "base_weight_bytes",
    "build_meta_model",
    "estimate",
    "estimate_for",
    "estimate_model",
    "resolve_model",
    "shipped_models",
]
