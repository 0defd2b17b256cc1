"""What a case costs: peak memory and wall time, measured the same way everywhere.

Peak memory of a case, by device (the method is recorded next to every figure):

- ``cuda``: the device's peak allocated and reserved bytes, with the peak statistics reset at
  the start of the case (``torch.cuda.reset_peak_memory_stats``).
- ``cpu`` on Linux (``cpu-rss-hwm``): the process's resident-set high-water mark (VmHWM), reset
  at the start of the case by writing ``5`` to ``/proc/self/clear_refs``; the figure is the peak
  above the resident size just before the case. The kernel tracks the peak exactly, so no
  sampling interval can miss a short spike.
- ``cpu`` elsewhere (``cpu-rss-sampled``): a thread samples the resident size every 2 ms.

Before a case starts, freed heap memory is handed back to the OS (``malloc_trim``) so the
"before" level does not hide memory the previous case left in the allocator's free lists.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import gc
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------- memory


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def rss_bytes() -> int:
    kib = _status_kib("VmRSS")
    if kib is not None:
        return kib * 1024
    import psutil

    return int(psutil.Process().memory_info().rss)


@functools.cache
def _can_reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def release_freed_memory() -> None:
    """Collect garbage and return freed heap pages to the OS (glibc keeps them otherwise)."""
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    name = ctypes.util.find_library("c")
    if name:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(name).malloc_trim(0)


@dataclass
class PeakMemory:
    """Context manager: the peak memory of the code inside it, above the level at entry."""

    device: str
    interval_s: float = 0.002
    before_bytes: int = 0
    peak_bytes: int = 0
    peak_reserved_bytes: int | None = None
    method: str = ""
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    _sampled_peak: int = 0
    _before_reserved: int = 0

    def __enter__(self) -> PeakMemory:
        release_freed_memory()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.before_bytes = int(torch.cuda.memory_allocated())
            self._before_reserved = int(torch.cuda.memory_reserved())
            self.method = "cuda-max-allocated"
        elif _can_reset_hwm():
            self.before_bytes = rss_bytes()
            with open("/proc/self/clear_refs", "w") as handle:
                handle.write("5")
            self.method = "cpu-rss-hwm"
        else:
            self.before_bytes = rss_bytes()
            self._sampled_peak = self.before_bytes
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
            self.method = "cpu-rss-sampled"
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._sampled_peak = max(self._sampled_peak, rss_bytes())
            time.sleep(self.interval_s)

    def read(self) -> int:
        """Peak above the entry level so far (usable inside the block, e.g. when it fails)."""
        if not self.method:
            return 0  # not entered yet
        if self.method == "cuda-max-allocated":
            import torch

            return max(0, int(torch.cuda.max_memory_allocated()) - self.before_bytes)
        if self.method == "cpu-rss-hwm":
            hwm = _status_kib("VmHWM") or 0
            return max(0, hwm * 1024 - self.before_bytes)
        return max(0, max(self._sampled_peak, rss_bytes()) - self.before_bytes)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        self.peak_bytes = self.read()
        if self.method == "cuda-max-allocated":
            import torch

            self.peak_reserved_bytes = max(0, int(torch.cuda.max_memory_reserved()) - self._before_reserved)


@contextlib.contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]``."""
    result = {"seconds": 0.0}
    start = time.perf_counter()
    try:
        yield result
    finally:
        result["seconds"] = time.perf_counter() - start
