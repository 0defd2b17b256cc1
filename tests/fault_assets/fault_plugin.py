"""Test-only pytest plugin: one fault injected into chosen benchmark cases, by method name.

Loaded by ``tests/test_faults.py`` into a real benchmark run (``-p fault_plugin``). It changes
nothing unless ``PEFTCORE_FAULTS`` names a case's method:

    PEFTCORE_FAULTS='{"lora-2": "nan", "lora-5": "hang"}'
    PEFTCORE_FAULT_DIR=/tmp/...        markers and the memory log are written here

Faults:

- ``raise``: a Trainer callback raises RuntimeError once step 1's loss is logged (a bug in a case).
- ``nan``: a forward hook turns the output layer's logits into NaN, so the loss is NaN at step 1.
- ``oom``: while the case trains, the process's address space (RLIMIT_AS) is capped at what it
  uses when training starts plus ``PEFTCORE_FAULT_OOM_HEADROOM_MB`` (default 32), so an
  allocation of the first training step fails for real. The cap is lifted when training ends.
- ``oom-onednn``: the address space runs out while oneDNN compiles a kernel in the case's first
  forward pass: a bf16 matrix product of a new shape is computed with the address space capped
  at its current size, so the JIT code buffer cannot be mapped. This is what the natural ``oom``
  does under bf16 autocast when that allocation is the one that fails; here it always is.
- ``hang``: once step 1's loss is logged, writes ``<method>.hang`` in the fault folder and
  sleeps, so the test (the parent process) can signal the run from outside mid-case.

Every case's resident memory when its method is applied (inside the case's memory window,
after freed memory was collected and trimmed, with the case's fresh copy of the base model
made) is appended to ``memory.jsonl``.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

FAULTS: dict[str, str] = json.loads(os.environ.get("PEFTCORE_FAULTS") or "{}")
FAULT_DIR = Path(os.environ.get("PEFTCORE_FAULT_DIR") or ".")
OOM_HEADROOM_BYTES = int(os.environ.get("PEFTCORE_FAULT_OOM_HEADROOM_MB") or 32) << 20
HANG_LIMIT_S = 900.0  # nobody signalled: fail the case rather than hang the suite


def _status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


@contextmanager
def _address_space_capped(headroom_bytes: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (_status_bytes("VmSize") + headroom_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def pytest_configure(config: pytest.Config) -> None:
    import peftcore.train.trainer as train
    from peftcore.train import methods

    real_apply, real_train, real_callbacks = methods.apply_method, train.train, train._callbacks

    def apply_method(model: Any, method: Any, budget: Any) -> Any:
        with open(FAULT_DIR / "memory.jsonl", "a") as log:
            log.write(json.dumps({"method": method.name, "rss_bytes": _status_bytes("VmRSS")}) + "\n")
        prepared = real_apply(model, method, budget)
        fault = FAULTS.get(method.name)
        if fault == "nan":
            prepared.get_output_embeddings().register_forward_hook(
                lambda module, args, out: out * float("nan")
            )
        elif fault == "oom-onednn":
            prepared.register_forward_pre_hook(_onednn_out_of_memory)
        return prepared

    def train_(model: Any, tokenizer: Any, dataset: Any, budget: Any, method: Any, **kw: Any) -> Any:
        if FAULTS.get(method.name) != "oom":
            return real_train(model, tokenizer, dataset, budget, method, **kw)
        with _address_space_capped(OOM_HEADROOM_BYTES):
            return real_train(model, tokenizer, dataset, budget, method, **kw)

    def callbacks(outcome: Any, method: Any, case_id: str, max_steps: int) -> list[Any]:
        found = real_callbacks(outcome, method, case_id, max_steps)
        fault = FAULTS.get(method.name)
        if fault in ("raise", "hang"):
            found.append(_fault_callback(fault, method.name))
        return found

    methods.apply_method = apply_method
    train.train = train_
    train._callbacks = callbacks


def _onednn_out_of_memory(module: Any, args: Any) -> None:
    """Build oneDNN kernels of shapes not seen before with no address space left for their code.

    A reorder to oneDNN's layout is JIT-compiled on every x86 CPU; a bf16 product goes through
    oneDNN only where the CPU has bf16 instructions (on an AVX2-only CPU it takes another path).
    """
    import torch

    x = torch.ones(8, 997)
    a = torch.ones(8, 997, dtype=torch.bfloat16)
    b = torch.ones(997, 40, dtype=torch.bfloat16)
    scratch = [torch.empty(2048) for _ in range(4096)]  # freed small blocks for oneDNN's bookkeeping
    del scratch
    with _address_space_capped(0):
        x.to_mkldnn()  # raises: the kernel's code cannot be mapped
        a @ b
    raise AssertionError("fault injection: no oneDNN kernel failed under the capped address space")


def _fault_callback(fault: str, method_name: str) -> Any:
    from transformers import TrainerCallback

    class Fault(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if not logs or "loss" not in logs or state.global_step < 1:
                return
            if fault == "raise":
                raise RuntimeError(f"injected fault in {method_name} at step {state.global_step}")
            # The parent signals as soon as the marker exists: it appears by a rename, after the
            # file is closed, so the signal cannot land inside open() and leak its file object.
            marker = FAULT_DIR / f"{method_name}.hang"
            partial = marker.with_suffix(".hang.partial")
            partial.write_text(str(state.global_step))
            partial.replace(marker)
            deadline = time.monotonic() + HANG_LIMIT_S
            while time.monotonic() < deadline:
                time.sleep(0.05)  # the parent's signal lands here
            raise RuntimeError(f"{method_name} hung for {HANG_LIMIT_S:.0f} s and nobody signalled")

    return Fault()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Any:
    """A safety net: whatever a case did to the address-space limit is undone when its call ends."""
    limits = resource.getrlimit(resource.RLIMIT_AS)
    try:
        return (yield)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, limits)
