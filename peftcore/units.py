"""Byte sizes, read and written one way everywhere (specs, gates, the planner, reports).

Reading accepts both conventions, spelled as people spell them: ``KB``/``MB``/``GB``/``TB``
(and the bare letters ``K``/``M``/``G``/``T``) are powers of 1000, ``KiB``/``MiB``/``GiB``/
``TiB`` powers of 1024, a number alone is bytes. Writing always uses the binary units, which is
what memory is allocated in: ``format_bytes(3 * 2**30) == '3.00 GiB'``.
"""

from __future__ import annotations

import re

BINARY_UNITS = (("B", 1.0), ("KiB", 2.0**10), ("MiB", 2.0**20), ("GiB", 2.0**30), ("TiB", 2.0**40))
_READ = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
UNITS_HELP = (
    "a number and a unit such as 24GB, 24GiB, 24000MB or 12G (G, M, K mean GB, MB, KB: powers of "
    "1000; GiB, MiB, KiB: powers of 1024; a number alone is bytes)"
)


def parse_bytes(value: str | int | float) -> int:
    """A size in bytes from ``24GB`` (10^9), ``24GiB`` (2^30), ``12G`` (= 12GB), ``1.5 MB`` or a
    plain number. ``ValueError`` says what is accepted.

    >>> parse_bytes("24GB"), parse_bytes("1GiB"), parse_bytes("12G"), parse_bytes("1.5 MB")
    (24000000000, 1073741824, 12000000000, 1500000)
    """
    if isinstance(value, bool):
        raise ValueError(f"expected {UNITS_HELP}; got {value!r}")
    if isinstance(value, (int, float)):
        if value < 0 or value != value:
            raise ValueError(f"expected a size of at least 0 bytes, got {value!r}")
        return round(value)
    match = re.fullmatch(
        r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*", str(value)
    )
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _READ:
        raise ValueError(f"expected {UNITS_HELP}; got {value!r}")
    return round(float(match.group(1)) * _READ[unit])


def byte_unit(value: float) -> tuple[str, float]:
    """The binary unit to write ``value`` bytes in, and its size: 3e9 -> ("GiB", 2**30)."""
    for unit, size in reversed(BINARY_UNITS):
        if not abs(value) < size:  # NaN and infinity take the largest unit
            return unit, size
    return BINARY_UNITS[0]


def format_bytes(value: float) -> str:
    """``1288490188.8`` -> ``'1.20 GiB'``: binary units, three significant digits.

    >>> format_bytes(1288490188.8), format_bytes(512), format_bytes(3 * 2**20)
    ('1.20 GiB', '512 B', '3.00 MiB')
    """
    unit, scale = byte_unit(value)
    size = float(value) / scale
    if unit == "B":
        return f"{size:.0f} B"
    digits = 0 if abs(size) >= 100 else 1 if abs(size) >= 10 else 2
    return f"{size:.{digits}f} {unit}"
