"""Test-only rank entry point: peftcore.train.distributed with one fault (tests/test_distributed.py).

The test points the launcher at this module (``launch.ENTRY_MODULE = "fault_rank"``, with this
folder on PYTHONPATH). Each rank writes its process id into ``PEFTCORE_FAULT_DIR``, then runs
the real entry point, with a Trainer callback that, once step 1's loss is logged (the ranks
gather it, so every rank has logged it then):

- ``PEFTCORE_FAULT=raise``: raises RuntimeError in rank ``PEFTCORE_FAULT_RANK`` (the other rank
  goes on into step 2 and waits for it in the gradients' all-reduce);
- ``hang``: sleeps in that rank (the other waits in the all-reduce until the process group's
  timeout);
- ``hang-all``: sleeps in every rank (no rank waits in a collective: only the launcher's
  watchdog can end it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

import peftcore.train.trainer as trainer
from peftcore.train import distributed

FAULT = os.environ.get("PEFTCORE_FAULT", "")
FAULTY_RANK = int(os.environ.get("PEFTCORE_FAULT_RANK", "1"))
RANK = int(os.environ.get("RANK", "0"))


class Fault(TrainerCallback):
    def on_log(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step != 1:
            return
        if FAULT == "raise" and RANK == FAULTY_RANK:
            raise RuntimeError(f"injected failure in rank {RANK} at step 1")
        if (FAULT == "hang" and RANK == FAULTY_RANK) or FAULT == "hang-all":
            time.sleep(3600)


_train = trainer.train


def _train_with_fault(*args: Any, extra_callbacks: Any = (), **kwargs: Any) -> Any:
    return _train(*args, extra_callbacks=[*extra_callbacks, Fault()], **kwargs)


if __name__ == "__main__":
    folder = Path(os.environ["PEFTCORE_FAULT_DIR"])
    (folder / f"rank-{RANK}.pid").write_text(str(os.getpid()))
    trainer.train = _train_with_fault  # type: ignore[assignment]
    distributed.main()
