"""The method ladder of ``--budget``: the methods that fit, best measured quality first.

Quality comes from the run store (``peftcore.results.store``), read as the report and the gates
read it: the newest finished record per case (method, model, task, seed). A method's held-out
primary metric is averaged over seeds, then methods are ranked against each other on each task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.plan.estimator import Estimate
from peftcore.results.store import all_runs, newest_per_case
from peftcore.vocab.quantities import higher_is_better
from peftcore.vocab.record import is_search_only, primary_metric


@dataclass(frozen=True)
class Quality:
    """A method's measured quality: mean over tasks of a 0-1 score from its rank per task."""

    score: float
    tasks: int


def measured_quality(results: Path, model: str | None) -> tuple[dict[str, Quality], str]:
    """Per method, the mean over tasks of its rank score on the task's primary metric, and a
    sentence saying how it was made ("" when ``results`` holds no usable record).

    On each task, methods are ranked by their held-out primary metric (the task's first metric;
    its direction from ``higher_is_better``), averaged over seeds, and scored 1 (best) to 0
    (worst), ties sharing the mean rank. Records of ``model`` are used when there are any, else
    those of every model, each model's tasks ranked apart. Unreadable records are skipped, as
    everywhere the store is read.
    """
    newest = newest_per_case(all_runs(results))
    same_model = {key: record for key, record in newest.items() if key[1] == model}
    chosen = same_model or newest
    # (model, task, metric) -> method -> signed values over seeds (higher = better)
    seeds: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for (method, model_name, task, _seed), record in chosen.items():
        if is_search_only(record):  # a search's trial or default run: not the method's compared run
            continue
        scored = _signed_primary(record)
        if scored is not None:
            metric, value = scored
            seeds.setdefault((model_name, task, metric), {}).setdefault(method, []).append(value)
    scores: dict[str, list[float]] = {}
    for by_method in seeds.values():
        means = {method: sum(values) / len(values) for method, values in by_method.items()}
        for method, score in rank_scores(means).items():
            scores.setdefault(method, []).append(score)
    if not scores:
        return {}, ""
    quality = {m: Quality(sum(s) / len(s), len(s)) for m, s in scores.items()}
    scope = f"model {model}" if same_model else "all models (none for this model)"
    tasks = f"{len(seeds)} task(s)" if same_model else f"{len(seeds)} (model, task) pair(s)"
    how = (
        f"quality: mean over {tasks} of a rank score on each task's primary metric "
        f"(held-out, mean over seeds; 1 = best method on the task, 0 = worst), from stored runs "
        f"in {results} ({scope})"
    )
    return quality, how


def _signed_primary(record: Mapping[str, Any]) -> tuple[str, float] | None:
    """(primary metric, held-out value signed so that higher is better), or None without one."""
    metric = primary_metric(record)
    value = ((record.get("metrics") or {}).get("held_out") or {}).get(metric) if metric else None
    if metric is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return None
    # A metric without a declared direction is taken as higher-is-better, as scores usually are.
    return metric, float(value) if higher_is_better(metric) is not False else -float(value)


def rank_scores(values: Mapping[str, float]) -> dict[str, float]:
    """Higher value = better; scores from 1 (best) to 0 (worst), ties share the mean rank."""
    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    n = len(ordered)
    if n == 1:
        return {ordered[0][0]: 1.0}
    ranks: dict[str, float] = {}
    i = 0
    while i < n:
        j = i
        while j + 1 < n and ordered[j + 1][1] == ordered[i][1]:
            j += 1
        for k in range(i, j + 1):
            ranks[ordered[k][0]] = (i + j) / 2
        i = j + 1
    return {m: 1 - r / (n - 1) for m, r in ranks.items()}


def ladder(
    estimates: Iterable[Estimate], budget_bytes: int, quality: Mapping[str, Quality]
) -> list[tuple[Estimate, Quality | None]]:
    """The estimates whose process peak fits ``budget_bytes``: by measured quality when known
    (methods without results after those with), else by predicted memory."""
    fits = [e for e in estimates if e.peak_process_bytes <= budget_bytes]
    if quality:
        fits.sort(
            key=lambda e: (
                e.method not in quality,
                -(quality[e.method].score if e.method in quality else 0),
                e.peak_process_bytes,
            )
        )
    else:
        fits.sort(key=lambda e: e.peak_process_bytes)
    return [(e, quality.get(e.method)) for e in fits]
