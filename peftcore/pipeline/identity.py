"""A case's identity: content hashes of everything that determines its record and its weights.

``case_hash`` covers the fully resolved spec, the model and data hashes and the versions of the
packages that change numbers (peftcore's own carries a fingerprint of the code a case runs
through, see :mod:`peftcore.results.provenance`). ``training_hash`` covers only what determines
the trained weights: the training settings, the examples trained on, the training packages'
versions and the fingerprint of the training path's code. So a case whose scoring settings,
scoring code or scoring packages changed re-scores its saved adapter instead of training again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.data.example import TaskData
from peftcore.results.provenance import code_fingerprint, hashed_versions
from peftcore.spec.cases import Case

# Keys of a spec that do not change what is trained (descriptions, licences, scoring).
_NOT_TRAINING = {
    "task": ("description", "license", "metrics", "generation", "expect"),
    "method": ("description",),
    "model": ("description", "license", "params"),
}


@dataclass(frozen=True)
class Identity:
    case_hash: str  # everything that determines the record
    training_hash: str  # everything that determines the trained weights


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _hashed_spec(case: Case) -> dict[str, Any]:
    spec = case.resolved()
    # A model's adapter_overrides are already merged into the method's adapter block (see
    # peftcore.spec.cases.apply_model_overrides); hashed again here, changing one tuner's
    # override would rerun every method on that model.
    spec["model"].pop("adapter_overrides", None)
    # Deployment variants are built after the case and reused one by one (each carries its own
    # variant_hash, peftcore.pipeline.deploy): listing one more must not rerun the case.
    spec.pop("deploy", None)
    # How long a multi-process case may stall before it is stopped changes nothing it measures.
    spec["training"].pop("stall_timeout_seconds", None)
    tuning = spec.get("tuning")
    if tuning is not None:
        # Whether default runs go beside the tuned ones changes neither (nor any trial); a
        # default run trains at the method's own values, whatever the search.
        tuning["search"].pop("compare_default", None)
        # Unset (no pruner, or its default), the key added with pruning leaves the hash as it was.
        if tuning["search"].get("prune_after") is None:
            tuning["search"].pop("prune_after", None)
        if tuning["kind"] == "default":
            tuning.pop("search")
    return spec


def identify(
    case: Case,
    model_sha256: str,
    data: TaskData,
    versions: Mapping[str, str | None],
    off_task_data: Mapping[str, Sequence[str]] | None = None,
) -> Identity:
    """The case's two hashes. ``versions``: :func:`peftcore.results.provenance.package_versions`
    (peftcore's carries the fingerprint of the code a case runs through); the training path's
    code enters ``training_hash`` as this process's ``code_fingerprint("training")``.
    ``off_task_data``: the data and split hashes of what the case is scored on outside its
    task, by role (:meth:`peftcore.pipeline.off_task.OffTaskData.hashes`); scoring only.

    ``case_hash`` covers ``training_hash``: whatever changes the training changes the case.
    """
    spec = _hashed_spec(case)
    for section, keys in _NOT_TRAINING.items():
        for key in keys:
            spec[section].pop(key, None)
    training_hash = _digest(
        {
            "method": spec["method"],
            "model": spec["model"],
            "task": spec["task"],
            "training": spec["training"],
            "train_uids": [ex.uid for ex in data.train],
            "model_sha256": model_sha256,
            "versions": hashed_versions(versions, "training"),
            "code": code_fingerprint("training"),
        }
    )
    case_hash = _digest(
        {
            "spec": _hashed_spec(case),
            "model_sha256": model_sha256,
            "data_sha256": data.data_sha256,
            "split_sha256": data.split_sha256,
            "versions": hashed_versions(versions),
            "training_hash": training_hash,
            **({"off_task_data": {k: list(v) for k, v in off_task_data.items()}} if off_task_data else {}),
        }
    )
    return Identity(case_hash, training_hash)
