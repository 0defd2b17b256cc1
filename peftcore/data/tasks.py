"""A task's examples: its source read offline, fields mapped, templates rendered, split.

One straight line, each step in its own module::

    locate the source, read records                        sources.py
    -> take ``source.record_field``, drop repeated records    records.py  (= the usable records)
    -> uid = sha256 of each record's canonical JSON           records.py
    -> map ``fields`` (dotted paths, filters)                  fields.py, filters.py
    -> render ``prompt`` / ``target`` into examples            render.py, labels.py
    -> order by sha256(f"{split_seed}:{uid}"): held_out, then train; seen = head of train
                                                               split.py
    -> stored in the disk cache                                disk_cache.py

This module runs that line (:func:`load_task`, :func:`source_size`) and holds the in-process
caches. Importing it is cheap (``peftcore list`` uses :func:`source_size`): ``datasets`` and
``pyarrow`` are imported only by the readers that need them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from peftcore.data import disk_cache
from peftcore.data.example import TaskData
from peftcore.data.fields import CompiledField, compile_fields, map_record
from peftcore.data.records import Records, json_default, select_usable
from peftcore.data.render import example_from_json, render_example
from peftcore.data.sources import describe_source, read_records, source_path
from peftcore.data.split import check_sizes, split_order, split_sha256
from peftcore.spec import DataSizes, TaskSpec

_RECORDS_MEMO: dict[str, Records] = {}
_RECORDS_KEEP = 4  # sources held in memory at once (HellaSwag's records are ~30 MB)
_TASK_MEMO: dict[str, TaskData] = {}
_SIZE_MEMO: dict[str, int] = {}


def clear_caches() -> None:
    """Forget what this process loaded (the disk cache stays)."""
    _TASK_MEMO.clear()
    _SIZE_MEMO.clear()
    _RECORDS_MEMO.clear()


def usable_records(task: TaskSpec) -> Records:
    """The task's distinct records, read once per process and source.

    Raises what :func:`~peftcore.data.sources.read_records` and
    :func:`~peftcore.data.records.select_usable` raise.
    """
    path = source_path(task)
    key = disk_cache.source_key(task, path)
    if key not in _RECORDS_MEMO:
        records = select_usable(task, read_records(task), describe_source(task, path))
        while len(_RECORDS_MEMO) >= _RECORDS_KEEP:
            del _RECORDS_MEMO[next(iter(_RECORDS_MEMO))]
        _RECORDS_MEMO[key] = records
    return _RECORDS_MEMO[key]


def source_size(task: TaskSpec) -> int:
    """How many usable (distinct) records the task's source holds.

    Cached per process and on disk (keyed by the files' size and mtime), so ``peftcore list``
    reads each source once. Raises :class:`AssetError` / :class:`SpecError` like
    :func:`load_task` when the source is missing or malformed.
    """
    path = source_path(task)
    key = disk_cache.source_key(task, path)
    if key in _SIZE_MEMO:
        return _SIZE_MEMO[key]
    name = disk_cache.entry_name("size", task.name, path, key)
    cached = disk_cache.read_entry(name, key)
    if cached is not None and isinstance(cached.get("source_size"), int):
        size: int = cached["source_size"]
    else:
        records = usable_records(task)
        size = len(records.records)
        disk_cache.write_entry(name, key, {"source_size": size, "data_sha256": records.data_sha256})
    _SIZE_MEMO[key] = size
    return size


def load_task(task: TaskSpec, sizes: DataSizes) -> TaskData:
    """The task's examples, split into train / held_out / seen / tune.

    Records are read from ``task.source`` (offline for package and local sources), reduced
    to distinct ones, ordered by sha256(f"{split_seed}:{uid}"): the first ``held_out`` are
    held out, the next ``train`` are trained on, ``seen`` is the head of ``train``, the next
    ``tune`` are the tuning split.

    Each example maps ``task.fields`` and renders ``prompt`` and ``target`` with
    ``str.format``. Derived names: ``answer_text`` (gold choice text, or first gold answer),
    ``choice_list`` ("A. ...\\nB. ..."), ``answer_index``. Multiple choice and
    classification render every choice through ``target`` (``label`` is the gold index);
    generation keeps ``answers`` (the target's text when ``fields.answers`` is not set);
    language modelling puts the rendered text in ``target`` with an empty prompt.

    Every record is mapped, so a bad record fails whatever the sizes. Errors are one line:
    :class:`AssetError` for a missing package or file, :class:`SpecError` (naming the spec
    file and key) for a path not in the data, an unresolvable label, a failing template or
    sizes the data cannot meet. Cached per process and on disk under ``$PEFTCORE_CACHE``.
    """
    fields = compile_fields(task)
    path = source_path(task)
    source_key = disk_cache.source_key(task, path)
    key = disk_cache.task_key(task, sizes, source_key)
    if key in _TASK_MEMO:
        return _TASK_MEMO[key]
    name = disk_cache.entry_name("task", task.name, path, key)
    payload = disk_cache.read_entry(name, key)
    if payload is None:
        payload = _build(task, fields, sizes)
        disk_cache.write_entry(name, key, payload)
        payload = json.loads(json.dumps(payload, default=json_default))  # the form a cache hit has
    train = tuple(example_from_json(e) for e in payload["train"])
    data = TaskData(
        task_name=task.name,
        train=train,
        held_out=tuple(example_from_json(e) for e in payload["held_out"]),
        seen=train[: sizes.seen],
        tune=tuple(example_from_json(e) for e in payload.get("tune", ())),
        data_sha256=payload["data_sha256"],
        split_sha256=payload["split_sha256"],
        source_size=payload["source_size"],
    )
    _TASK_MEMO[key] = data
    _SIZE_MEMO.setdefault(source_key, data.source_size)
    return data


def _build(task: TaskSpec, fields: Sequence[CompiledField], sizes: DataSizes) -> dict[str, Any]:
    """The disk cache payload of :func:`load_task`: rendered splits and their hashes."""
    records = usable_records(task)
    examples = []
    # Every record is mapped and rendered, not just the sampled ones: a record the spec cannot
    # handle fails whatever the sizes and seed, and before any size complaint.
    for record, uid, pos in zip(records.records, records.uids, records.positions, strict=True):
        where = f"record {pos + 1} of {records.where}"  # counted from 1, as lines are
        examples.append(render_example(task, uid, map_record(task, fields, record, where), where))
    check_sizes(task, sizes, len(examples), records.where)
    order = split_order(records.uids, sizes.split_seed)
    held_out = [examples[i] for i in order[: sizes.held_out]]
    train = [examples[i] for i in order[sizes.held_out : sizes.held_out + sizes.train]]
    start = sizes.held_out + sizes.train
    tune = [examples[i] for i in order[start : start + sizes.tune]]
    splits = {"train": train, "held_out": held_out, "tune": tune}
    uids = {name: [e["uid"] for e in split] for name, split in splits.items()}
    return {
        "train": train,
        "held_out": held_out,
        "tune": tune,
        "data_sha256": records.data_sha256,
        "split_sha256": split_sha256(
            uids["train"], uids["held_out"], uids["train"][: sizes.seen], uids["tune"]
        ),
        "source_size": len(examples),
    }
