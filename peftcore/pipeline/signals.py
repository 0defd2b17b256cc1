"""Interrupts held back while a case's record is written, so no second signal can lose it.

Ctrl-C (SIGINT) and SIGTERM end a session by raising KeyboardInterrupt in the main thread; the
running case then releases its memory and writes its ``cancelled`` record. A second signal
arriving during that cleanup used to raise again inside it, and the record was never written.
Python has no call to defer a signal to a later point of the program (``pthread_sigmask`` on the
main thread does not help: the process's other threads still take the signal and Python runs
the handler in the main thread anyway), so the handlers are swapped for one that only notes the
signal, and the noted signal is delivered once the record is on disk.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

DEFERRED = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def interrupts_deferred() -> Iterator[list[int]]:
    """Within the block, SIGINT and SIGTERM are noted, not acted on; the yielded list holds them.

    On leaving, the handlers in place before are restored. If a signal was noted and no exception
    is already on its way out (a first interrupt, which the block is cleaning up after), the
    first noted signal's own handler runs then (Ctrl-C: KeyboardInterrupt). Outside the main
    thread signals cannot be handled, and the block does nothing.
    """
    noted: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield noted
        return

    def note(signum: int, frame: FrameType | None) -> None:
        noted.append(signum)

    earlier: dict[int, Any] = {}
    for deferred in DEFERRED:
        earlier[deferred] = signal.signal(deferred, note)
    failed = False
    try:
        yield noted
    except BaseException:
        failed = True
        raise
    finally:
        for signum, handler in earlier.items():
            signal.signal(signum, handler)
        if noted and not failed:
            handler = earlier[noted[0]]
            if callable(handler):
                handler(noted[0], None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(noted[0])
