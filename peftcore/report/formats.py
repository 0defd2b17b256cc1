"""How the report writes a number: metric values, sizes, durations and counts, with ± over seeds.

Every function returns display text and never raises on a finite value; NaN is written ``NaN``.
A byte size takes its unit from :func:`peftcore.units.byte_unit`, so a single size reads exactly
as :func:`peftcore.units.format_bytes` writes it in messages and gates.
"""

from __future__ import annotations

import math

from peftcore.report.rows import Stat
from peftcore.units import byte_unit

DASH = "—"  # a value that was not measured (the untrained base has no training costs), never zero

_COUNT_UNITS = (("K", 1e3), ("M", 1e6), ("B", 1e9))


def decimals(value: float, base: int) -> int:
    """Decimals for about ``base + 1`` significant digits: 0.480, 31.07, 513."""
    size = abs(value)
    return max(0, base - (2 if size >= 100 else 1 if size >= 10 else 0))


def _pm(mean: float, std: float | None, *, base: int, scale: float = 1.0, unit: str = "") -> str:
    """``1.18 ± 0.01 GiB``: the deviation gets the mean's decimals and is left out when it rounds to 0."""
    if math.isnan(mean):
        return "NaN"
    digits = decimals(mean / scale, base)
    text = f"{mean / scale:.{digits}f}"
    if std is not None and round(std / scale, digits) != 0:
        text += f" ± {std / scale:.{digits}f}"
    return text + (f" {unit}" if unit else "")


def fmt_value(value: float) -> str:
    """A single metric value: 0.480, 31.07, 412.5."""
    return _pm(value, None, base=3)


def fmt_metric(stat: Stat) -> str:
    """A metric over seeds: ``0.480 ± 0.007``."""
    return _pm(stat.mean, stat.std, base=3)


def fmt_metric_interval(stat: Stat, half_width: float | None, *, over_seeds: bool) -> str:
    """A metric with half its 95% interval: ``0.480 ± 0.098``. In a table of means over seeds
    (``over_seeds``) the ± is the deviation over seeds, so the interval is labelled:
    ``0.480 ± 0.007 (CI ± 0.098)``, or ``0.480 (CI ± 0.098)`` for a row of one seed. Without
    ``half_width`` this is :func:`fmt_metric`."""
    if half_width is None or math.isnan(stat.mean):
        return fmt_metric(stat)
    width = f"{half_width:.{decimals(stat.mean, 3)}f}"
    if not over_seeds:
        return f"{fmt_value(stat.mean)} ± {width}"
    return f"{fmt_metric(stat)} (CI ± {width})"


def fmt_bytes(stat: Stat) -> str:
    """A size over seeds in binary units: ``1.18 ± 0.01 GiB``; one value reads as ``format_bytes``."""
    unit, scale = byte_unit(stat.mean)
    return _pm(stat.mean, stat.std, base=0 if unit == "B" else 2, scale=scale, unit=unit)


def fmt_seconds(stat: Stat) -> str:
    """A duration: one value as ``3 min 08 s``; over seeds in one unit, ``3.13 ± 0.05 min``."""
    mean = stat.mean
    if stat.std is not None:
        unit, scale = ("s", 1.0) if mean < 120 else ("min", 60.0) if mean < 7200 else ("h", 3600.0)
        return _pm(mean, stat.std, base=2, scale=scale, unit=unit)
    if mean < 60:
        return f"{mean:.1f} s"
    if mean < 3600:
        minutes, seconds = divmod(round(mean), 60)
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(round(mean / 60), 60)
    return f"{hours} h {minutes:02d} min"


def fmt_ms(stat: Stat) -> str:
    """A latency over seeds: ``44.0 ± 0.6 ms``."""
    return _pm(stat.mean, stat.std, base=2, unit="ms")


def fmt_count(value: float) -> str:
    """921600 -> ``921.6 K``; below a thousand the number itself."""
    for unit, scale in reversed(_COUNT_UNITS):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:,.0f}"


def fmt_percent(value: float) -> str:
    """A share in percent: ``12%``, ``0.69%``, ``0%``."""
    if value >= 10:
        return f"{value:.0f}%"
    return f"{value:.2g}%" if value > 0 else "0%"
