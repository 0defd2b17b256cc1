"""A case's trained weights on disk: the adapter folder a record points to, written atomically.

A peft adapter is saved to ``adapters/<case-id>/``, loadable with ``PeftModel.from_pretrained``;
a fully fine-tuned model or a search's trial is written for its size only, unless kept.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from peftcore.results.store import adapter_path
from peftcore.spec.cases import Case
from peftcore.storage import atomic_folder


def save_adapter(model: Any, case: Case, run_dir: Path, *, keep_full: bool) -> tuple[int, str | None]:
    """Save the trained weights; return (bytes of the safetensors files, folder or None).

    A peft adapter is saved (atomically) to ``adapters/<case-id>/``, loadable with
    ``PeftModel.from_pretrained``. A fully fine-tuned model is written too, for its size, and
    kept only when ``keep_full`` is set (it is as large as the model). A search's trial is
    written for its size and not kept (it is scored once, on the tuning split). An error (a
    full disk above all) names the folder and leaves nothing half-written.
    """
    from peftcore.train.methods import save_trained

    target = adapter_path(run_dir, case.case_id)
    trial = case.tuning is not None and case.tuning.kind == "trial"
    try:
        if (case.method.is_peft or keep_full) and not trial:
            with atomic_folder(target) as tmp:
                save_trained(model, tmp, case.method)
                size = _safetensors_bytes(tmp)
            return size, str(target.relative_to(run_dir))
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{case.case_id}-", dir=target.parent) as scratch:
            save_trained(model, Path(scratch), case.method)
            return _safetensors_bytes(Path(scratch)), None
    except OSError as err:
        cause = err.__cause__ if isinstance(err.__cause__, OSError) else err  # atomic_folder's wrap
        raise OSError(
            err.errno, f"could not save the trained weights to {target}: {cause.strerror or cause}"
        ) from err
    except Exception as err:
        # safetensors reports a failed write as its own SafetensorError ("Error while serializing:
        # IoError(Os { code: 28, ... })"), not an OSError: the same one line, without its
        # traceback (whose frames print the tensors being written).
        code = _os_error_code(err)
        if code is None:
            raise
        raise OSError(code, f"could not save the trained weights to {target}: {os.strerror(code)}") from None


def _os_error_code(err: BaseException) -> int | None:
    """The errno inside a Rust I/O error's message (``os error 28``, ``code: 28``), or None.

    >>> _os_error_code(RuntimeError("IoError(Os { code: 28, kind: StorageFull })"))
    28
    >>> _os_error_code(ValueError("shapes differ")) is None
    True
    """
    found = re.search(r"(?:os error|code:) ?(\d+)", str(err))
    return int(found.group(1)) if found else None


def _safetensors_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors") if p.is_file())
