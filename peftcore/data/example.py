"""The unit of data every stage shares: one task example, already rendered to text.

``peftcore.data.tasks`` builds these from a task spec; training turns them into token ids; scoring
asks the model about them. Plain frozen dataclasses, no torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Example:
    """One example of a task, rendered with the task's templates.

    - ``uid``: stable identity (sha256 of the source record), used for splitting and caching.
    - ``prompt``: the rendered prompt (plain text; a chat template is applied later, per model).
    - ``target``: what the model is trained to produce after the prompt.
    - ``choices``: for multiple choice and classification, each candidate continuation rendered
      exactly as ``target`` would be for that choice (so scoring and training agree).
    - ``label``: index of the gold choice.
    - ``answers``: gold answers of a generation task (the metric takes the best over them).
    - ``fields``: the mapped fields the templates were rendered from (for reports and judges).

    For a language-modelling task ``prompt`` is empty and ``target`` holds the whole text.
    """

    uid: str
    prompt: str
    target: str
    choices: tuple[str, ...] = ()
    label: int | None = None
    answers: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class TaskData:
    """A task's examples split into disjoint parts.

    ``train`` is what a case trains on, ``held_out`` is never trained on, ``seen`` is a sample
    of ``train`` scored to compare with ``held_out``, ``tune`` (empty unless ``data.tune``) is
    what a search scores its trials on, apart from all three. ``data_sha256`` hashes the source
    records (before splitting); ``split_sha256`` hashes the uids of each split in order.
    """

    task_name: str
    train: tuple[Example, ...]
    held_out: tuple[Example, ...]
    seen: tuple[Example, ...]
    data_sha256: str
    split_sha256: str
    source_size: int
    tune: tuple[Example, ...] = ()

    def split(self, name: str) -> tuple[Example, ...]:
        if name not in ("train", "held_out", "seen", "tune"):
            raise KeyError(f"no split {name!r}; expected train, held_out, seen or tune")
        return getattr(self, name)
