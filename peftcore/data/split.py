"""The deterministic split: held_out, train and seen drawn from the usable records by hash.

Records are ordered by sha256(f"{split_seed}:{uid}"): the first ``held_out`` are held out, the
next ``train`` are trained on, ``seen`` is the head of ``train``, and the next ``tune`` are the
tuning split a search scores its trials on. The order depends only on the uids and the seed, so
it is the same on every machine and for every file order; the tuning split comes last, so adding
one changes no other split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from peftcore.errors import SizeError, SpecError
from peftcore.spec import DataSizes, TaskSpec


def split_order(uids: Sequence[str], split_seed: int) -> list[int]:
    """Indices of ``uids`` ordered by sha256(f"{split_seed}:{uid}"): stable everywhere."""
    keys = [hashlib.sha256(f"{split_seed}:{uid}".encode("ascii")).hexdigest() for uid in uids]
    return sorted(range(len(uids)), key=keys.__getitem__)


def split_sha256(
    train: Sequence[str], held_out: Sequence[str], seen: Sequence[str], tune: Sequence[str] = ()
) -> str:
    """sha256 over the uids of train, held_out, seen and tune, in that order, one split a line
    (an empty tuning split adds no line: the hash of a split without one is what it always was)."""
    splits = [("train", train), ("held_out", held_out), ("seen", seen)]
    splits += [("tune", tune)] if tune else []
    text = "".join(f"{name}:{','.join(uids)}\n" for name, uids in splits)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def check_sizes(task: TaskSpec, sizes: DataSizes, available: int, where: str) -> None:
    """Raise :class:`SpecError` unless ``sizes`` can be drawn from ``available`` records.

    ``held_out`` needs at least one example (``train`` and ``seen`` may be empty: a profile of
    untrained methods only scores), ``seen`` cannot exceed ``train``, and ``train`` plus
    ``held_out`` must fit in the usable records of ``where``.
    """
    if sizes.held_out < 1:
        raise SizeError(
            task.file, "data.held_out", f"the held_out split would be empty ({sizes.held_out}); set it >= 1"
        )
    if sizes.seen > sizes.train:
        raise SpecError(
            task.file, "data.seen", f"seen {sizes.seen} > train {sizes.train}: seen is drawn from train"
        )
    if sizes.tune and sizes.train + sizes.held_out + sizes.tune > available:
        raise SizeError(
            task.file,
            "data.tune",
            f"train {sizes.train} + held_out {sizes.held_out} + tune {sizes.tune} > {available} usable "
            f"examples of task {task.name} in {where}: the tuning split would overlap held_out or "
            "train; lower data.tune (or data.train)",
        )
    if sizes.train + sizes.held_out > available:
        raise SizeError(
            task.file,
            "data",
            f"train {sizes.train} + held_out {sizes.held_out} > {available} usable examples of task "
            f"{task.name} in {where}; lower data.train/data.held_out (or --train-size/--held-out-size)",
        )
