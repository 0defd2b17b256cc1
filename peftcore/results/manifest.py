"""The grid manifest of a run folder: which cases the sessions that wrote into it selected.

Each session writes ``<run>/grid/<K>-of-<N>.json`` (``1-of-1`` without ``--shard``): the whole
selection (profile, ``-k``, ``-m``, ``--seeds``), the part this session's shard runs, and when it
started. :func:`grid_status` reads them back for ``peftcore report``: the cases of the grid that
no session has recorded (yet), and the shards that never started.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from peftcore.storage import atomic_write_json

GRID_FOLDER = "grid"


@dataclass(frozen=True)
class Shard:
    """Part ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    @property
    def file_name(self) -> str:
        return f"{self.index}-of-{self.count}.json"


WHOLE = Shard(1, 1)


def parse_shard(text: str) -> Shard:
    """``"K/N"`` with 1 <= K <= N; ValueError with a one-line reason otherwise."""
    parts = text.strip().split("/")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"expected K/N with whole numbers, like 2/4, got {text!r}")
    index, count = int(parts[0]), int(parts[1])
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"expected 1 <= K <= N, got {text!r}")
    return Shard(index, count)


def write_manifest(run_dir: Path, shard: Shard, selected: Sequence[str], mine: Sequence[str]) -> Path:
    """Record in the run folder which cases this session's shard runs out of which selection."""
    path = run_dir / GRID_FOLDER / shard.file_name
    atomic_write_json(
        path,
        {
            "shard": str(shard),
            "grid": sorted(selected),
            "cases": sorted(mine),
            "started_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        },
    )
    return path


@dataclass(frozen=True)
class GridStatus:
    """What the manifests of a run say is expected, and what of it has no record."""

    expected: tuple[str, ...]  # every case id some session of the run selected
    missing: tuple[str, ...]  # of those, the ones without a record
    shards_not_started: tuple[str, ...]  # "K/N" of shards that wrote no manifest
    problems: tuple[str, ...]  # manifests that could not be read


def grid_status(run_dir: Path, recorded: Iterable[str]) -> GridStatus | None:
    """The run's expected grid against the case ids ``recorded``; None for a run without manifests
    (written before manifests existed, or by ``peftcore_runner`` outside the grid)."""
    folder = run_dir / GRID_FOLDER
    files = sorted(p for p in folder.glob("*.json") if not p.name.startswith(".")) if folder.is_dir() else []
    if not files:
        return None
    expected: set[str] = set()
    started: dict[int, set[int]] = {}
    problems = []
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            shard = parse_shard(str(data["shard"]))
            expected.update(str(case_id) for case_id in data["grid"])
        except (OSError, ValueError, KeyError, TypeError) as err:
            problems.append(f"{path}: not a readable grid manifest ({err})")
            continue
        started.setdefault(shard.count, set()).add(shard.index)
    not_started = [
        str(Shard(index, count))
        for count, indexes in sorted(started.items())
        for index in range(1, count + 1)
        if index not in indexes
    ]
    done = set(recorded)
    return GridStatus(
        tuple(sorted(expected)),
        tuple(sorted(expected - done)),
        tuple(not_started),
        tuple(problems),
    )
