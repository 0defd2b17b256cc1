"""Files other steps read: written whole or not at all, and the cache they live in.

Every write that another step (or another process) reads goes through here: a file is written
to a temp file in the same folder, fsynced and renamed over its destination; a folder is built
under a temp name next to its destination and renamed into place. A reader sees the old
content or the whole new one, never half of it, and a failure (a full disk above all) leaves
no temp file behind and names the path it could not write.

Dot-prefixed names are temp files of writes in progress: readers skip them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    """``$PEFTCORE_CACHE`` (default ``~/.cache/peftcore``): converted models, tokenized and
    prepared data, judge verdicts. ``make clean-cache`` removes it."""
    return Path(os.environ.get("PEFTCORE_CACHE") or Path.home() / ".cache" / "peftcore").expanduser()


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """``with atomic_file(path) as tmp:`` write ``tmp``; on success it replaces ``path``.

    The temp file lives in the same folder (rename is atomic only within a filesystem) and is
    fsynced before the rename; on any error it is removed, and an ``OSError`` is raised again
    naming ``path``.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as err:
        raise OSError(err.errno, f"could not write {path}: {err.strerror}") from err
    tmp = Path(name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and str(path) not in str(err):
            raise OSError(err.errno, f"could not write {path}: {err.strerror}") from err
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, allow_nan=True) + "\n")


@contextlib.contextmanager
def atomic_folder(target: Path, *, replace: bool = True) -> Iterator[Path]:
    """``with atomic_folder(target) as tmp:`` fill ``tmp``; on success it becomes ``target``.

    ``tmp`` is a fresh folder next to ``target``. When the block ends without an error, an
    existing ``target`` is moved aside, ``tmp`` renamed to ``target`` and the old one removed,
    so a reader sees the old folder or the whole new one (a failed rename puts the old one
    back). With ``replace=False`` an existing ``target`` is kept instead: for content-addressed
    caches, where another process that finished the same folder first wrote the same thing.
    On an error ``tmp`` is removed and the error raised, with the path named when it is an
    ``OSError``.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise OSError(err.errno, f"could not write {target}: {err.strerror}") from err
    old: Path | None = None
    try:
        yield tmp
        if target.exists():
            if not replace:
                return
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.rename(target, old / target.name)
        try:
            os.rename(tmp, target)
        except OSError:
            if old is not None:
                os.rename(old / target.name, target)  # the old folder goes back
                raise
            if replace or not target.exists():
                raise
            # replace=False and the folder appeared meanwhile: another process finished it first
    except OSError as err:
        if str(target) in str(err):
            raise
        raise OSError(err.errno, f"could not write {target}: {err.strerror or err}") from err
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
