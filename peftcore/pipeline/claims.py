"""One session at a time per case of a run folder: a second session with the same ``--run-id``
(a command started twice) waits for the case, then finds its record, instead of training it again.

A claim is an exclusive ``flock`` on ``<run>/.claims/<case-id>.lock``, held while the case runs.
The kernel drops it when the holder's process ends, however it ends (kill -9 included), so a
claim never outlives its session and needs no clean-up. Where ``fcntl`` does not exist (Windows)
cases are not claimed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - not on the platforms this runs on
    fcntl = None  # type: ignore[assignment]


def claim_path(run_dir: Path, case_id: str) -> Path:
    return run_dir / ".claims" / f"{case_id}.lock"


@contextmanager
def claimed(run_dir: Path, case_id: str, on_wait: Callable[[str], None]) -> Iterator[bool]:
    """Hold the case's claim within the block; yields whether another process held it first.

    ``on_wait`` is told who holds it (their pid, as they wrote it) before this process waits.
    """
    if fcntl is None:
        yield False
        return
    path = claim_path(run_dir, case_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            on_wait(holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
            waited = True
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield waited
    finally:
        os.close(fd)  # closing the descriptor releases the lock
