"""Two sessions with the same --run-id do not both train a case: the second waits for the first's
claim, then takes its record (issue: a command started twice trained every case twice)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from peftcore.pipeline.claims import claim_path, claimed
from peftcore.pipeline.session import _finished_record
from peftcore.results.store import write_record


def test_an_unclaimed_case_is_taken_at_once_and_again_after_release(tmp_path: Path) -> None:
    waits: list[str] = []
    for _ in range(2):
        with claimed(tmp_path, "lora-x", waits.append) as waited:
            assert not waited
            assert claim_path(tmp_path, "lora-x").read_text() == str(os.getpid())
    assert waits == []


def test_a_held_claim_makes_the_second_wait_until_it_is_released(tmp_path: Path) -> None:
    taken, release = threading.Event(), threading.Event()

    def first() -> None:
        with claimed(tmp_path, "lora-x", lambda holder: None):
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=first)
    holder.start()
    assert taken.wait(10)
    waits: list[str] = []
    threading.Timer(0.3, release.set).start()
    start = time.monotonic()
    with claimed(tmp_path, "lora-x", waits.append) as waited:
        assert waited and waits == [str(os.getpid())]  # the holder's pid, as it wrote it
        assert time.monotonic() - start >= 0.25
    holder.join(10)


def test_a_killed_holder_leaves_no_claim_behind(tmp_path: Path) -> None:
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from peftcore.pipeline.claims import claimed\n"
        "with claimed(Path(sys.argv[1]), 'lora-x', print):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "held"
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        with claimed(tmp_path, "lora-x", lambda holder: None) as waited:
            assert not waited
    finally:
        child.kill()
        child.wait(10)
        if child.stdout is not None:
            child.stdout.close()


def test_after_waiting_only_a_finished_record_of_the_same_case_is_taken(tmp_path: Path) -> None:
    record = {"format": 1, "case_id": "lora-x", "run_id": "r", "method": "lora", "model": "m", "task": "t"}
    record |= {"status": "finished", "case_hash": "abc"}
    assert _finished_record(tmp_path, "lora-x", "abc") is None  # nothing written yet
    write_record(tmp_path, record)
    assert _finished_record(tmp_path, "lora-x", "abc") is not None
    assert _finished_record(tmp_path, "lora-x", "changed") is None
    write_record(tmp_path, {**record, "status": "cancelled"})
    assert _finished_record(tmp_path, "lora-x", "abc") is None
