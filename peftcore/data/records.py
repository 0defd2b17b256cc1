"""Usable records and their uids: what the split and every hash are computed over.

The raw records of a source become the usable ones by taking ``source.record_field`` of each
and dropping repeats (the same record, or with ``source.dedupe_on`` the same value there). A
record's uid is the sha256 of its canonical JSON, so it is the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from peftcore.data.fields import MissingPath, walk
from peftcore.errors import AssetError, SpecError
from peftcore.spec import TaskSpec


def json_default(value: Any) -> Any:
    """What ``json.dumps`` writes for a value JSON has no type for (bytes, dates, decimals)."""
    if isinstance(value, bytes):
        return value.hex()
    return str(value)  # dates, decimals: their text is stable


def canonical_json(record: Any) -> str:
    """The text a uid hashes: sorted keys, no spaces, unicode kept."""
    return json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=json_default)


def record_uid(record: Any) -> str:
    """sha256 (hex) of the record's :func:`canonical_json`."""
    # surrogatepass: a lone surrogate ("\ud800" in a JSON file) still hashes, and stably
    return hashlib.sha256(canonical_json(record).encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Records:
    """The usable records of a source: distinct, in file order, each with its uid and position."""

    records: tuple[Mapping[str, Any], ...]
    uids: tuple[str, ...]
    positions: tuple[int, ...]  # index in the file's record sequence, for messages
    where: str  # the source, for messages
    data_sha256: str


def select_usable(task: TaskSpec, raw: Sequence[Any], where: str) -> Records:
    """The usable records among ``raw`` (a source's records in file order, ``where`` names it).

    ``data_sha256`` hashes the sorted uids. Raises :class:`SpecError` when ``record_field`` or
    ``dedupe_on`` is missing from a record, :class:`AssetError` when a record is not an object.
    """
    src = task.source
    dedupe = tuple(src.dedupe_on.split(".")) if src.dedupe_on else None
    records, uids, positions = [], [], []
    seen_uids: set[str] = set()
    seen_keys: set[str] = set()
    for position, record in enumerate(raw):
        if src.record_field:
            try:
                record = walk(record, src.record_field.split("."))
            except MissingPath as missing:
                keys = ", ".join(missing.keys or ())
                raise SpecError(
                    task.file,
                    "source.record_field",
                    f"no {src.record_field!r} in record {position + 1} of {where} (there: {keys:.200})",
                ) from None
        if not isinstance(record, Mapping):
            raise AssetError(
                f"{task.file}: record {position + 1} of {where} is a {type(record).__name__}, "
                "not an object with fields"
            )
        uid = record_uid(record)
        if uid in seen_uids:
            continue
        if dedupe is not None:
            try:
                key = canonical_json(walk(record, dedupe))
            except MissingPath:
                raise SpecError(
                    task.file, "source.dedupe_on", f"no {src.dedupe_on!r} in record {position + 1} of {where}"
                ) from None
            if key in seen_keys:
                continue
            seen_keys.add(key)
        seen_uids.add(uid)
        records.append(record)
        uids.append(uid)
        positions.append(position)
    data_sha = hashlib.sha256("\n".join(sorted(uids)).encode("ascii")).hexdigest()
    return Records(tuple(records), tuple(uids), tuple(positions), where, data_sha)
