"""Is case A better than case B on these examples, and how sure are we?

``peftcore.compare(a, b, metric)`` pairs two scored cases example by example (by uid) and gives
the difference ``a - b`` of a metric with its 95% interval, a p-value, n and the minimum
detectable difference at 80% power (:class:`peftcore.stats.paired.Comparison`):

- a mean over examples (accuracy, Brier score, token F1, ...): paired bootstrap interval, exact
  McNemar p-value for 0/1 scores, paired t otherwise;
- a corpus-level metric (macro F1, perplexity): paired bootstrap for both;
- several seeds a side (a list of records): seeds resampled, then examples.

Cases scored on different examples are an error, never a silently unpaired test.
``load_examples(runs)`` reads the same per-example scores into a tidy DataFrame.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.errors import PeftcoreError
from peftcore.results.frame import DEFAULT_RESULTS, run_records
from peftcore.results.variants import with_variants
from peftcore.vocab.metrics import corpus_statistic
from peftcore.vocab.record import METRIC_BLOCKS, OOD_PREFIX, case_seed

if TYPE_CHECKING:
    import pandas as pd

    from peftcore.stats.paired import Comparison

CaseLike = Mapping[str, Any]


class CompareError(PeftcoreError, ValueError):
    """Two cases cannot be compared: unpaired examples, no per-example scores, a bad confidence."""


def split_examples(record: CaseLike, split: str) -> Mapping[str, Any] | None:
    """The ``examples`` block of ``record``'s ``split`` (None when it has none)."""
    block = (record.get("examples") or {}).get(split)
    return block if isinstance(block, Mapping) and block.get("uid") else None


def _name(record: CaseLike) -> str:
    return str(record.get("case_id") or record.get("method") or "?")


def _examples(record: CaseLike, split: str, metric: str) -> Mapping[str, Any]:
    block = split_examples(record, split)
    if block is None:
        raise CompareError(
            f"{_name(record)}: no per-example scores for split {split!r} "
            "(scored by a peftcore before per-example scores were kept; re-score it with --rescore)"
        )
    if metric not in (block.get("scores") or {}) and metric not in (block.get("corpus") or {}):
        known = sorted({*(block.get("scores") or {}), *(block.get("corpus") or {})})
        raise CompareError(
            f"{_name(record)}: no per-example scores of metric {metric!r} in split {split!r}; "
            f"it has {', '.join(known) or 'none'}"
        )
    return block


def _paired_order(blocks: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """The uids every block shares, in the first's order; CompareError unless all have the same."""
    first_name, first = blocks[0]
    uids = list(first["uid"])
    wanted = set(uids)
    for name, block in blocks[1:]:
        theirs = set(block["uid"])
        if theirs != wanted:
            shared = len(theirs & wanted)
            raise CompareError(
                f"unpaired: {first_name} and {name} were scored on different examples "
                f"({len(wanted)} and {len(theirs)}, {shared} shared); a paired comparison needs the same "
                "held-out examples (same task, data sizes and split seed)"
            )
    return uids


def _column(block: Mapping[str, Any], metric: str, order: Sequence[str]) -> list[float]:
    position = {uid: i for i, uid in enumerate(block["uid"])}
    values = block["scores"][metric]
    return [float(values[position[uid]]) for uid in order]


def _corpus_inputs(block: Mapping[str, Any], metric: str, order: Sequence[str]) -> dict[str, list[Any]]:
    position = {uid: i for i, uid in enumerate(block["uid"])}
    inputs = block["corpus"][metric]
    return {key: [values[position[uid]] for uid in order] for key, values in inputs.items()}


def _as_runs(side: CaseLike | Sequence[CaseLike]) -> list[CaseLike]:
    runs = [side] if isinstance(side, Mapping) else list(side)
    if not runs:
        raise CompareError("compare: a side has no records")
    return runs


def compare(
    a: CaseLike | Sequence[CaseLike],
    b: CaseLike | Sequence[CaseLike],
    metric: str,
    *,
    split: str = "held_out",
    confidence: float = 0.95,
    resamples: int = 1000,
    seed: int = 0,
) -> Comparison:
    """``a - b`` on ``metric`` over the examples both were scored on (``split``: ``held_out``,
    ``seen`` or ``ood.<task>``). ``a`` and ``b`` are case records (or deployment-variant rows),
    or lists of records of one case over several seeds.

    CompareError when a side has no per-example scores of the metric, the sides were scored on
    different examples, or the confidence is outside (0, 1).
    """
    from peftcore.stats import paired

    if not 0 < confidence < 1:
        raise CompareError(f"compare: confidence must be in (0, 1), got {confidence!r}")
    if split not in METRIC_BLOCKS and not split.startswith(OOD_PREFIX):
        raise CompareError(f"compare: split must be held_out, seen or ood.<task>, got {split!r}")
    a_runs, b_runs = _as_runs(a), _as_runs(b)
    blocks = [(_name(r), _examples(r, split, metric)) for r in (*a_runs, *b_runs)]
    order = _paired_order(blocks)
    label = f"{split}.{metric}" if split != "held_out" else metric
    a_blocks, b_blocks = [blk for _, blk in blocks[: len(a_runs)]], [blk for _, blk in blocks[len(a_runs) :]]
    try:
        if all(metric in (blk.get("scores") or {}) for _, blk in blocks):
            a_cols = [_column(blk, metric, order) for blk in a_blocks]
            b_cols = [_column(blk, metric, order) for blk in b_blocks]
            # An example a metric leaves out (nan: abs_diff without a number) on any side is
            # left out of the pairs.
            kept = [i for i in range(len(order)) if all(math.isfinite(c[i]) for c in (*a_cols, *b_cols))]
            if len(kept) < len(order):
                a_cols = [[c[i] for i in kept] for c in a_cols]
                b_cols = [[c[i] for i in kept] for c in b_cols]
            if len(a_cols) == len(b_cols) == 1:
                return paired.compare_scores(
                    a_cols[0], b_cols[0], metric=label, confidence=confidence, resamples=resamples, seed=seed
                )
            return paired.compare_seeded(
                a_cols, b_cols, metric=label, confidence=confidence, resamples=resamples, seed=seed
            )
        if len(a_blocks) != 1 or len(b_blocks) != 1:
            raise CompareError(f"compare: {metric!r} is corpus-level; compare one seed a side")
        (a_block,), (b_block,) = a_blocks, b_blocks
        stat_a = corpus_statistic(metric, {"corpus": {metric: _corpus_inputs(a_block, metric, order)}})
        stat_b = corpus_statistic(metric, {"corpus": {metric: _corpus_inputs(b_block, metric, order)}})
        if stat_a is None or stat_b is None:
            raise CompareError(f"compare: no resampling statistic for corpus metric {metric!r}")
        return paired.compare_corpus(
            stat_a,
            stat_b,
            len(order),
            estimate_a=_value(a_runs[0], split, metric),
            estimate_b=_value(b_runs[0], split, metric),
            metric=label,
            confidence=confidence,
            resamples=resamples,
            seed=seed,
        )
    except ValueError as err:
        if isinstance(err, CompareError):
            raise
        raise CompareError(f"compare {_name(a_runs[0])} with {_name(b_runs[0])} on {label}: {err}") from None


def _value(record: CaseLike, split: str, metric: str) -> float:
    value = ((record.get("metrics") or {}).get(split) or {}).get(metric)
    if not isinstance(value, (int, float)):
        raise CompareError(f"{_name(record)}: no {split} {metric} value")
    return float(value)


# --------------------------------------------------------------------------- tidy per-example frame

EXAMPLE_KEYS = ("run_id", "case_id", "method", "model", "task", "seed", "split", "uid")


def examples_frame(records: Iterable[CaseLike]) -> pd.DataFrame:
    """One row per case (and deployment variant) x split x example: the identity columns of
    ``EXAMPLE_KEYS``, then one column per metric with that example's score (per-example scores of
    the means; a corpus metric's inputs as ``<metric>.<input>``, e.g. ``macro_f1.predicted``)."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for record in with_variants(list(records)):
        identity = {
            "run_id": record.get("run_id"),
            "case_id": record.get("case_id"),
            "method": record.get("method"),
            "model": record.get("model"),
            "task": record.get("task"),
            "seed": case_seed(record),
        }
        for split, block in (record.get("examples") or {}).items():
            if not isinstance(block, Mapping) or not block.get("uid"):
                continue
            columns: dict[str, Sequence[Any]] = dict(block.get("scores") or {})
            for name, inputs in (block.get("corpus") or {}).items():
                columns.update({f"{name}.{key}": values for key, values in inputs.items()})
            for i, uid in enumerate(block["uid"]):
                row = {**identity, "split": split, "uid": uid}
                row.update({name: values[i] for name, values in columns.items()})
                rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(EXAMPLE_KEYS))
    return frame


def load_examples(
    source: str | Path | Iterable[str | Path],
    *,
    results_dir: str | Path | None = None,
    newest_only: bool = False,
) -> pd.DataFrame:
    """The per-example scores of one or more runs (``source`` as for ``peftcore.load_results``)
    as a tidy DataFrame: one row per case x split x example (:func:`examples_frame`).

    >>> df = load_examples("reports/runs/smoke")                                   # doctest: +SKIP
    >>> df[df.split == "held_out"].pivot(index="uid", columns="method", values="accuracy")  # doctest: +SKIP
    """
    records = run_records(source, results_dir=results_dir or DEFAULT_RESULTS, newest_only=newest_only)
    return examples_frame(records)
