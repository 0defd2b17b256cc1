"""Why a case stopped: out of memory (and whether the process can go on), or another error.

A failure becomes a status and a one-line reason in the case's record; these helpers tell an
allocation failure from any other error, including the form oneDNN gives it on a CPU.
"""

from __future__ import annotations

import itertools
import sys

from peftcore.errors import PeftcoreError

ONEDNN_FAILED = "could not create a primitive"
_PROBES = itertools.count()


class CaseOutOfMemory(PeftcoreError):
    """A case ran out of memory; the message says how far it got and what would help.

    ``stops_session`` says why no further case can run in this process (or is None).
    """

    def __init__(self, message: str, stops_session: str | None = None) -> None:
        super().__init__(message)
        self.stops_session = stops_session


def is_out_of_memory(err: BaseException) -> bool:
    """True when ``err``, or an error it was raised from or while handling, is a failed allocation.

    peft's and peftcore's own wrappers (a SpecError from ``get_peft_model``) keep the
    allocator's error as their context.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _is_allocation_failure(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def _is_allocation_failure(err: BaseException) -> bool:
    if isinstance(err, MemoryError):
        return True
    # The CPU allocator raises a plain RuntimeError when an allocation fails.
    text = str(err)
    if isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text):
        return True
    torch = sys.modules.get("torch")  # not imported: the error cannot be torch's
    out_of_memory = getattr(torch, "OutOfMemoryError", None)
    return isinstance(out_of_memory, type) and isinstance(err, out_of_memory)


def cpu_kernels_broken() -> str | None:
    """None when this thread can still build CPU kernels, else the error that says it cannot.

    oneDNN (torch's bf16 CPU kernels, and its layout reorders on any x86 CPU) compiles a kernel
    for each new shape. When the memory for that code cannot be had, the JIT assembler keeps the
    failure as a thread-local error that is never cleared: from then on every kernel not built
    before fails with "could not create a primitive", whatever memory is free. The probe builds
    kernels of a shape not seen before (the primitive cache would answer a known one): a reorder,
    which oneDNN compiles on every x86 CPU, and a bf16 product, which goes through oneDNN only
    where the CPU has bf16 instructions.
    """
    import torch

    inner = 61 + 2 * next(_PROBES)
    try:
        if torch.backends.mkldnn.is_available():
            torch.ones(8, inner).to_mkldnn()
        a = torch.ones(8, inner, dtype=torch.bfloat16)
        b = torch.ones(inner, 40, dtype=torch.bfloat16)
        float((a @ b).sum())
    except RuntimeError as err:
        return one_line(err)
    return None


def one_line(err: BaseException, limit: int | None = None) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    text = str(err).strip().splitlines()
    line = f"{type(err).__name__}: {text[0]}" if text else type(err).__name__
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"
