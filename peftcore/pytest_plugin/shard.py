"""``--shard K/N``: a deterministic part of the grid, so N jobs (a CI matrix, a SLURM array) run
it all into one results folder.

The cases are put in one order that depends on nothing but the cases themselves (their base
model variant, then their id: not the collection order, the machine or the Python hash seed)
and cut into N contiguous runs whose sizes differ by at most one. Contiguous in that order
means a shard holds the cases of one or two base-model variants, so each job loads few models.
Every shard sees the same selection (same profile, ``-k``, ``-m``, ``--seeds``), so the shards
are disjoint and together are the whole selection. A search's trials and the tuned runs that
choose from them (profile ``tune:``) are one unit, never cut apart: a tuned run reads its trials'
records in its own run. Each session writes a manifest of what it selected into the run folder
(:mod:`peftcore.results.manifest`), from which ``peftcore report`` names the cases no shard has
recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from peftcore.results.manifest import Shard
from peftcore.spec.cases import Case


def shard_order(case: Case) -> tuple[Any, ...]:
    """The order shards are cut from: base-model variant, then case id (both plain names)."""
    model, quantization, double_quant, compute = case.variant_key
    return (model, quantization, double_quant, compute, case.case_id)


def partition(cases: Iterable[Case], shard: Shard) -> set[str]:
    """The case ids of ``shard``: a contiguous, balanced slice of the units in :func:`shard_order`
    (a unit is a case, or a search's study: its trials and tuned runs).

    Cases with the same id (a project's own test over the cases next to the grid's) count once.
    """
    unique = {case.case_id: case for case in cases}
    units: dict[str, list[Case]] = {}
    for case in sorted(unique.values(), key=shard_order):
        units.setdefault(case.tuning.study if case.tuning is not None else case.case_id, []).append(case)
    ordered = list(units.values())
    total = len(ordered)
    start = (shard.index - 1) * total // shard.count
    stop = shard.index * total // shard.count
    return {case.case_id for unit in ordered[start:stop] for case in unit}
