"""A results location at an fsspec URL (object storage such as ``s3://bucket/runs``).

An object store has no rename (a run folder cannot be built aside and moved into place) and a
case's adapter is written by ``save_pretrained`` into a local folder. So a session whose results
location is a URL works on a local mirror of it (``$PEFTCORE_CACHE/results/<hash of the URL>``)
with the ordinary run store, and this module keeps the two in step:

- :meth:`RemoteResults.pull` copies every run's case records and grid manifests from the URL into
  the mirror: before the first case is planned (so resuming and cached-result adoption see what
  other machines wrote) and before the report (so it holds what every shard wrote);
- :meth:`RemoteResults.push` uploads one record as it is kept: the files of its freshly saved
  adapter first, then the record in one write. An object store shows an object whole or not at
  all, so a reader never sees half a record, and a record it sees finds its adapter.

Adapters are not pulled: a case whose only earlier training is on another machine trains again
instead of being re-scored, and an adopted record from another machine has no ``adapter_dir``.
``file://`` URLs are plain local paths (:func:`split_location`), with the store's own atomic
writes (temp file, rename).
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError
from peftcore.results.manifest import GRID_FOLDER
from peftcore.results.store import record_path
from peftcore.storage import atomic_write_bytes, cache_root


class LocationError(PeftcoreError):
    """A results URL whose file system is unknown or not installed."""


def is_url(text: str) -> bool:
    return "://" in text


def split_location(text: str) -> tuple[str | None, Path]:
    """``(url, local folder)`` of a results location: a plain path or ``file://`` URL is its own
    local folder (url None); any other URL is mirrored under the cache."""
    if not is_url(text):
        return None, Path(text)
    protocol = text.split("://", 1)[0]
    if protocol in ("file", "local"):
        return None, Path(text.split("://", 1)[1])
    digest = hashlib.sha256(text.rstrip("/").encode("utf-8")).hexdigest()[:16]
    return text.rstrip("/"), cache_root() / "results" / digest


class RemoteResults:
    """The run store at ``url``, mirrored into ``mirror``."""

    def __init__(self, url: str, mirror: Path) -> None:
        from fsspec.core import url_to_fs

        try:
            self.fs, self.root = url_to_fs(url)
        except (ImportError, ValueError) as err:
            raise LocationError(f"results location {url}: {err}") from None
        self.url, self.mirror = url, mirror

    def _remote(self, local: Path) -> str:
        return posixpath.join(self.root, *local.relative_to(self.mirror).parts)

    def pull(self) -> int:
        """Copy records and grid manifests the mirror lacks or holds differently; how many."""
        copied = 0
        for pattern in ("*/cases/*.json", f"*/{GRID_FOLDER}/*.json"):
            for remote in self.fs.glob(posixpath.join(self.root, pattern)):
                relative = posixpath.relpath(remote, self.root)
                if any(part.startswith(".") for part in relative.split("/")):
                    continue  # a write in progress
                local = self.mirror.joinpath(*relative.split("/"))
                data = self.fs.cat_file(remote)
                if not local.is_file() or local.read_bytes() != data:
                    atomic_write_bytes(local, data)
                    copied += 1
        return copied

    def push_file(self, local: Path) -> None:
        """Upload one file of the mirror in one write (an object appears whole)."""
        target = self._remote(local)
        self.fs.makedirs(posixpath.dirname(target), exist_ok=True)
        self.fs.pipe_file(target, local.read_bytes())

    def push(self, run_dir: Path, record: Mapping[str, Any]) -> None:
        """Upload the record of ``run_dir`` (in the mirror), its own adapter's files first."""
        relative = record.get("adapter_dir")
        if relative:
            adapter = (run_dir / relative).resolve()
            if adapter.is_dir() and adapter.is_relative_to(run_dir.resolve()):  # trained in this run
                for path in sorted(p for p in adapter.rglob("*") if p.is_file()):
                    self.push_file(self.mirror / path.relative_to(self.mirror.resolve()))
        self.push_file(record_path(run_dir, str(record["case_id"])))
