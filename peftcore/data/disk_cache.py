"""The disk cache of prepared task data: what keys an entry, and reading and writing entries.

An entry is one JSON file under :func:`cache_dir` holding its key; it is used only while the
stored key equals the key computed now. Keys cover what decides the result: the source block,
the resolved path and its files' sizes and mtimes (so edited data is read again), the task's
mapping and templates, the split sizes, and :data:`ALGORITHM_VERSION`. Writes go through
:func:`peftcore.storage.atomic_write_text`, so a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from peftcore.data.records import canonical_json, json_default
from peftcore.data.sources import file_stamps
from peftcore.spec import DataSizes, TaskSpec, plain
from peftcore.storage import atomic_write_text, cache_root

log = logging.getLogger(__name__)

# Bump when a change alters uids, mapping, rendering or splitting: it invalidates disk caches.
ALGORITHM_VERSION = 1


def cache_dir() -> Path:
    """``$PEFTCORE_CACHE/data`` (default ``~/.cache/peftcore/data``)."""
    return cache_root() / "data"


def source_key(task: TaskSpec, path: Path | None) -> str:
    """What decides the usable records: the source block, the resolved path and file stamps."""
    stamp = file_stamps(path) if path is not None else None
    return canonical_json(
        {
            "v": ALGORITHM_VERSION,
            "source": plain(task.source),
            "path": str(path) if path else None,
            "stamp": stamp,
        }
    )


def task_key(task: TaskSpec, sizes: DataSizes, source: str) -> str:
    """What decides a task's examples and split: its :func:`source_key`, mapping, templates, sizes."""
    return canonical_json(
        {
            "source": source,
            "task": {
                k: plain(getattr(task, k)) for k in ("name", "type", "fields", "prompt", "target", "choices")
            },
            "sizes": plain(sizes),
        }
    )


def entry_name(kind: str, task_name: str, path: Path | None, key: str) -> str | None:
    """The file name of an entry, ``{kind}-{task_name}-{key digest}.json``.

    ``None`` (not cached on disk) for a hub source (``path`` is ``None``): it has no files to
    stamp, so nothing would tell a stale entry.
    """
    if path is None:
        return None
    return f"{kind}-{task_name}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:20]}.json"


def read_entry(name: str | None, key: str) -> dict[str, Any] | None:
    """The entry's payload; ``None`` when it is not cached, unreadable or stored under another key."""
    if name is None:
        return None
    path = cache_dir() / name
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(payload, dict) or payload.get("key") != key:
        return None
    return payload


def write_entry(name: str | None, key: str, payload: dict[str, Any]) -> None:
    """Store ``payload`` under ``key`` (nothing when ``name`` is ``None``).

    A failed write is logged at debug level, never raised: the cache only saves time.
    """
    if name is None:
        return
    text = json.dumps({"key": key, **payload}, separators=(",", ":"), default=json_default)
    try:
        atomic_write_text(cache_dir() / name, text)
    except OSError as err:  # a read-only home: the cache is an optimisation, loading still works
        log.debug("data cache not written: %s", err)
