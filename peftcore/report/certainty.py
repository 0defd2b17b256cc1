"""How sure the report is: each value's interval, paired tests between methods, what a run can detect.

A record keeps, per split and metric, a 95% interval over the examples it was scored on and the
per-example scores behind it (``uncertainty``, ``examples``). The frame carries the interval as
columns (:func:`peftcore.results.frame.records_frame`), so a row's interval is averaged over its
seeds like any other number (:meth:`~peftcore.report.rows.Row.uncertainty`); the paired tests run
:func:`peftcore.compare` on a row's records (all its seeds: a two-level bootstrap).

- :func:`half_width`: the ± a table writes after a value (half its 95% interval);
- :func:`assess`: per (model, task), on the held-out primary metric, the best method against the
  runner-up, every method against the base (against the best when there is no base) with Holm's
  correction over all those comparisons of the report, the smallest difference the held-out
  examples can detect, and whether seeds or examples make the larger noise;
- :func:`indistinct_from_best`: the methods a plot fades because a test cannot tell them from the best.

Records scored before per-example scores were kept have none of this: their values are shown
bare, their comparisons are "not tested" and a note says why. Nothing here raises on them.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from peftcore.report.comparison import Table
from peftcore.report.formats import DASH, decimals
from peftcore.report.rows import Groups, Row, primary_of
from peftcore.vocab.quantities import Quantity, higher_is_better

if TYPE_CHECKING:
    from peftcore.stats.paired import Comparison

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
POWER = 0.8  # what the minimum detectable difference plans for (peftcore.stats.paired.DEFAULT_POWER)
NO_SCORES = "no per-example scores (scored before peftcore kept them)"

INTERVAL_NOTE = (
    "± after a value: half the width of its 95% confidence interval over the examples it was scored on "
    "(Wilson for 0/1 scores, normal for other means, bootstrap for macro F1 and perplexity). Over several "
    "seeds a cell reads mean ± standard deviation over the seeds (CI ± the seeds' mean half-width). A value "
    "without it has no interval recorded."
)


# --------------------------------------------------------------------------- one value


def half_width(row: Row, quantity: Quantity) -> float | None:
    """Half the 95% interval of ``quantity`` in ``row`` (its seeds' ends averaged); None when
    no record of the row carries an interval of it."""
    low, high = row.uncertainty(quantity, "ci_low"), row.uncertainty(quantity, "ci_high")
    if low is None or high is None:
        return None
    width = (high.mean - low.mean) / 2
    return width if math.isfinite(width) else None


def fmt_p(p: float) -> str:
    """A p-value as a reader needs it: ``< 0.001``, ``0.008``, ``0.0496``, ``0.62``.

    >>> [fmt_p(p) for p in (0.0004, 0.00799, 0.0496, 0.625, 1.0)]
    ['< 0.001', '0.008', '0.0496', '0.625', '1']
    """
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.3g}"


def p_words(p: float) -> str:
    """``p = 0.62`` or ``p < 0.001``."""
    text = fmt_p(p)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _signed(value: float, digits: int) -> str:
    return f"{value:+.{digits}f}"


def difference_words(comparison: Comparison, digits: int) -> str:
    """``difference +0.010, 95% CI [-0.040, +0.060], p = 0.84``."""
    low, high = _signed(comparison.low, digits), _signed(comparison.high, digits)
    interval = f"{comparison.confidence:.0%} CI [{low}, {high}]"
    return f"difference {_signed(comparison.difference, digits)}, {interval}, {p_words(comparison.p_value)}"


# --------------------------------------------------------------------------- two methods


@dataclass(frozen=True)
class Paired:
    """Method ``a`` against method ``b`` on one metric (``a - b``): the comparison, or why there is none."""

    a: str
    b: str
    comparison: Comparison | None
    why_not: str = ""
    holm_p: float | None = None  # adjusted over the report's comparisons with a reference

    @property
    def significant(self) -> bool | None:
        """Beyond noise at 95%: by the Holm-adjusted p when there is one, else the test's own
        p; None when not tested."""
        if self.comparison is None:
            return None
        p = self.holm_p if self.holm_p is not None else self.comparison.p_value
        return p < ALPHA


def _side(row: Row) -> Any:
    """What :func:`peftcore.compare` takes for a row: its record, or its seeds' records."""
    return row.records[0] if len(row.records) == 1 else row.records


def _why_not(rows: Sequence[Row], split: str, error: Exception) -> str:
    from peftcore.results.compare import split_examples

    if any(split_examples(r, split) is None for row in rows for r in row.records):
        return NO_SCORES
    return str(error)


def pair(a: Row, b: Row, metric: str, split: str = "held_out") -> Paired:
    """``a`` against ``b`` on ``split``'s ``metric``, paired by example over all their seeds; not
    tested (``why_not`` says why) without per-example scores, for a corpus-level metric over
    several seeds, or for cases scored on different examples."""
    from peftcore.results.compare import CompareError, compare, split_examples

    def corpus_level(record: Mapping[str, Any]) -> bool:
        block = split_examples(record, split) or {}
        return metric in (block.get("corpus") or {}) and metric not in (block.get("scores") or {})

    # a corpus metric (macro F1, perplexity) has no per-example score to average over seeds
    if len(a.records) + len(b.records) > 2 and any(corpus_level(r) for r in (*a.records, *b.records)):
        return Paired(
            a.method, b.method, None, f"{metric} is corpus-level: no paired test over several seeds"
        )
    try:
        comparison = compare(_side(a), _side(b), metric, split=split, confidence=CONFIDENCE)
    except CompareError as err:
        return Paired(a.method, b.method, None, _why_not([a, b], split, err))
    except (LookupError, TypeError) as err:  # per-example blocks of the wrong shape
        return Paired(a.method, b.method, None, f"malformed per-example scores ({err!r})")
    return Paired(a.method, b.method, comparison)


def ranked(rows: Sequence[Row], quantity: Quantity) -> list[Row]:
    """The rows with a value of ``quantity``, best mean first by its direction; none when the
    quantity declares no direction."""
    direction = higher_is_better(quantity.name)
    if direction is None:
        return []
    scored = [r for r in rows if (s := r.stat(quantity)) is not None and not math.isnan(s.mean)]

    def mean(row: Row) -> float:
        stat = row.stat(quantity)
        assert stat is not None
        return stat.mean

    return sorted(scored, key=mean, reverse=direction)


def indistinct_from_best(rows: Sequence[Row], quantity: Quantity) -> tuple[str | None, list[str]]:
    """The best method by mean of ``quantity`` and the methods a paired test cannot tell from it
    (Holm over the comparisons with the best, p >= 0.05). A method that cannot be tested (no
    per-example scores) is in neither: nothing is said about it."""
    from peftcore.stats.multiple import holm

    order = ranked(rows, quantity)
    if len(order) < 2:
        return (order[0].method if order else None), []
    best = order[0]
    p_values = {}
    for row in order[1:]:
        comparison = pair(row, best, quantity.name, quantity.block).comparison
        if comparison is not None:
            p_values[row.method] = comparison.p_value
    adjusted = holm(list(p_values.values())).tolist() if p_values else []
    return best.method, [m for m, p in zip(p_values, adjusted, strict=True) if p >= ALPHA]


# --------------------------------------------------------------------------- a (model, task)


@dataclass(frozen=True)
class GroupCertainty:
    """What a (model, task) can tell apart on its held-out primary metric."""

    metric: str | None
    reference: str | None  # the method every other is compared with: the base, else the best
    reference_is_base: bool
    lead: Paired | None  # the best method against the runner-up (by mean)
    against: list[Paired] = field(default_factory=list)  # each other method against the reference
    family: int = 0  # comparisons Holm's correction ran over (every group's `against`)
    detectable: str | None = None  # "with N held-out examples, differences under X ..."
    noise: str | None = None  # which dominates: seed-to-seed sd or per-example stderr
    bare: list[str] = field(default_factory=list)  # methods whose value has no interval

    def against_reference(self, method: str) -> Paired | None:
        return next((p for p in self.against if p.a == method), None)


def _digits(rows: Sequence[Row], quantity: Quantity) -> int:
    means = [s.mean for r in rows if (s := r.stat(quantity)) and math.isfinite(s.mean)]
    return decimals(max(map(abs, means), default=0.0), 3)


def _in_points(rows: Sequence[Row], quantity: Quantity) -> bool:
    """Whether the metric reads as a share (accuracy, F1) so a difference is in points."""
    means = [s.mean for r in rows if (s := r.stat(quantity))]
    return bool(means) and higher_is_better(quantity.name) is True and all(0 <= m <= 1 for m in means)


def _per_example_sd(row: Row, metric: str) -> tuple[float, int] | None:
    """The sd of ``row``'s first record's held-out per-example scores of ``metric``, and n."""
    from peftcore.results.compare import split_examples

    block = split_examples(row.records[0], "held_out")
    scores = ((block or {}).get("scores") or {}).get(metric)
    values = [float(v) for v in scores or () if isinstance(v, (int, float)) and math.isfinite(v)]
    return (statistics.stdev(values), len(values)) if len(values) >= 2 else None


def _detectable(
    rows: Sequence[Row], quantity: Quantity, lead: Paired | None, fallback: Row | None
) -> str | None:
    """One sentence: the smallest held-out difference a test finds with 80% power at 95%.

    From the best two methods' paired comparison (the sd of their per-example differences, or
    the bootstrap stderr of their difference) when there is one; else from one method's own
    per-example scores, taking the sd of a difference between two methods as sqrt(2) times
    theirs (errors of two methods taken as independent, which overstates it when they agree
    on the same examples)."""
    from peftcore.stats.paired import minimum_detectable_difference

    if lead is not None and lead.comparison is not None:
        mde, n = lead.comparison.mde, lead.comparison.n
        source = f"the paired per-example differences of {lead.a} and {lead.b}"
    else:
        found = _per_example_sd(fallback, quantity.name) if fallback is not None else None
        if found is None or fallback is None:
            return None
        sd, n = found
        mde = minimum_detectable_difference(sd * math.sqrt(2), n, confidence=CONFIDENCE, power=POWER)
        source = f"{fallback.method}'s per-example scores, a difference's sd taken as √2 × theirs"
    if not math.isfinite(mde):
        return None
    size = f"{100 * mde:.1f} points" if _in_points(rows, quantity) else f"{mde:.{_digits(rows, quantity)}f}"
    return (
        f"With {n} held-out examples, differences in held-out {quantity.name} under {size} cannot be "
        f"detected ({POWER:.0%} power, {CONFIDENCE:.0%}); from {source}."
    )


def _noise(rows: Sequence[Row], quantity: Quantity) -> str | None:
    """Which is larger on the rows with several seeds: the sd over seeds or the per-example
    standard error (each seed's, averaged), and so what would narrow the comparison more."""
    pairs = [
        (stat.std, stderr.mean)
        for row in rows
        if (stat := row.stat(quantity)) is not None
        and stat.std is not None
        and (stderr := row.uncertainty(quantity, "stderr")) is not None
    ]
    if not pairs:
        return None
    sd = statistics.fmean(p[0] for p in pairs)
    se = statistics.fmean(p[1] for p in pairs)
    digits = _digits(rows, quantity) + 1
    seeds = f"the seed-to-seed standard deviation ({sd:.{digits}f}, mean over methods)"
    examples = f"the per-example standard error ({se:.{digits}f}, mean of the seeds')"
    if sd > se:
        larger, smaller, remedy = seeds, examples, "more seeds"
    else:
        larger, smaller, remedy = examples, seeds, "more held-out examples"
    return f"Held-out {quantity.name}: {larger} exceeds {smaller}; {remedy} would narrow comparisons most."


def _assess_group(rows: Sequence[Row]) -> GroupCertainty:
    metric = primary_of(rows)
    if metric is None:
        return GroupCertainty(None, None, False, None)
    quantity = Quantity("held_out", metric)
    order = ranked(rows, quantity)
    lead = pair(order[0], order[1], metric) if len(order) >= 2 else None
    base = next((r for r in rows if not r.trains and r.stat(quantity) is not None), None)
    reference = base or (order[0] if order else None)
    against = [
        pair(row, reference, metric)
        for row in rows
        if reference is not None and row is not reference and row.stat(quantity) is not None
    ]
    return GroupCertainty(
        metric=metric,
        reference=reference.method if reference else None,
        reference_is_base=base is not None,
        lead=lead,
        against=against,
        detectable=_detectable(rows, quantity, lead, base or (order[0] if order else None)),
        noise=_noise(rows, quantity),
        bare=[r.method for r in rows if r.stat(quantity) is not None and half_width(r, quantity) is None],
    )


def assess(groups: Groups) -> dict[tuple[str, str], GroupCertainty]:
    """:class:`GroupCertainty` per (model, task) of ``groups``; the comparisons with each group's
    reference get Holm-adjusted p-values over all of them (the report's family)."""
    from peftcore.stats.multiple import holm

    found = {key: _assess_group(rows) for key, rows in groups.items()}
    tested = [
        (key, i, p.comparison.p_value)
        for key, g in found.items()
        for i, p in enumerate(g.against)
        if p.comparison
    ]
    adjusted = holm([p for _, _, p in tested]).tolist() if tested else []
    against = {key: list(g.against) for key, g in found.items()}
    for (key, i, _), p in zip(tested, adjusted, strict=True):
        against[key][i] = replace(against[key][i], holm_p=float(p))
    return {key: replace(g, against=against[key], family=len(tested)) for key, g in found.items()}


# --------------------------------------------------------------------------- the table


def comparison_table(certainty: GroupCertainty, rows: Sequence[Row]) -> tuple[str, Table] | None:
    """The caption and table of a group's comparisons with its reference: difference, 95%
    interval, p, Holm-adjusted p (``*`` when significant) and the test; None when none could be
    tested."""
    tested = [p.comparison for p in certainty.against if p.comparison]
    if not tested or certainty.metric is None:  # no per-example scores at all: the bare note says so
        return None
    digits = _digits(rows, Quantity("held_out", certainty.metric))
    reference = (
        f"the untrained {certainty.reference}"
        if certainty.reference_is_base
        else f"{certainty.reference} (best)"
    )
    caption = (
        f"Held-out {certainty.metric}, each method minus {reference}, paired over the {tested[0].n} "
        "held-out examples. "
        f"* significant at {CONFIDENCE:.0%} after Holm's correction over {certainty.family} "
        f"comparison{'s' if certainty.family != 1 else ''} "
        "(every comparison with a reference in this report)."
    )
    table = Table(
        ["Method", f"Difference vs {certainty.reference}", "95% CI", "p", "Holm p", "Test"],
        [],
        [False, True, True, True, True, False],
    )
    for paired in certainty.against:
        c = paired.comparison
        if c is None:
            table.rows.append([paired.a, DASH, DASH, DASH, DASH, f"not tested: {paired.why_not}"])
            continue
        mark = " *" if paired.significant else ""
        table.rows.append(
            [
                paired.a,
                _signed(c.difference, digits) + mark,
                f"[{_signed(c.low, digits)}, {_signed(c.high, digits)}]",
                fmt_p(c.p_value),
                fmt_p(paired.holm_p) if paired.holm_p is not None else DASH,
                c.test,
            ]
        )
    return caption, table


def bare_note(certainty: GroupCertainty) -> str | None:
    """A note naming the methods shown without an interval, and why."""
    if not certainty.bare or certainty.metric is None:
        return None
    return (
        f"No 95% interval recorded for held-out {certainty.metric} of {', '.join(certainty.bare)} (a record "
        "scored before peftcore kept per-example scores has none): shown bare."
    )


def has_intervals(rows: Sequence[Row], quantities: Sequence[Quantity]) -> bool:
    """Whether any row carries an interval of any of ``quantities``."""
    return any(half_width(r, q) is not None for r in rows for q in quantities if q.is_metric)
