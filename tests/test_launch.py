"""What a failed torchrun launch says when no rank wrote its error (peftcore.train.launch)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from peftcore.train.launch import RankFailed, Scratch, _failure


def _log(files: Scratch, rank: int, text: str, age_seconds: float) -> None:
    path = files.logs / "attempt_0" / str(rank) / "stderr.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    when = time.time() - age_seconds
    os.utime(path, (when, when))


def test_the_error_line_of_a_traceback_is_named_not_the_newest_progress_bar(tmp_path: Path) -> None:
    """A rank that raised outside its guarded region writes no error file; another rank's
    progress bar may be the newest line of any log (CI once said only "Writing model shards")."""
    files = Scratch(tmp_path)
    _log(files, 1, "Traceback (most recent call last):\n  File x\nValueError: shard 3 is missing\n", 30)
    _log(files, 0, "Writing model shards: 100%|##########| 1/1 [00:00<00:00, 55.67it/s]\n", 1)
    failed = _failure(files, processes=2, code=1)
    assert isinstance(failed, RankFailed)
    assert str(failed) == "torchrun exited with code 1: ValueError: shard 3 is missing"


def test_without_an_error_line_the_newest_log_speaks(tmp_path: Path) -> None:
    files = Scratch(tmp_path)
    _log(files, 0, "older line\n", 30)
    _log(files, 1, "newer line\n\n", 1)
    assert str(_failure(files, processes=2, code=-9)) == "torchrun exited with code -9: newer line"
    assert str(_failure(Scratch(tmp_path / "none"), processes=2, code=1)).endswith(": no output")
