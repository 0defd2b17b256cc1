"""Task data: a task spec -> its examples, split into train / held_out / seen.

The public names, importable from here: :func:`load_task` and :func:`source_size` (the whole
line, cached), its steps (:func:`source_path`, :func:`read_records`, :func:`usable_records`,
:func:`record_uid`, :func:`canonical_json`, :func:`resolve_label`, :func:`split_order`,
:func:`split_sha256`), the field filters (:data:`FILTERS`, :func:`register_filter`,
:func:`drop_bracket_tags`), and the data classes :class:`Example` and :class:`TaskData`.
The line itself is described in :mod:`peftcore.data.tasks`.

Importing this package is cheap: it does not import ``datasets``, ``pyarrow`` or torch.
"""

from peftcore.data.disk_cache import ALGORITHM_VERSION, cache_dir
from peftcore.data.example import Example, TaskData
from peftcore.data.filters import FILTERS, drop_bracket_tags, register_filter
from peftcore.data.labels import resolve_label
from peftcore.data.records import Records, canonical_json, record_uid
from peftcore.data.sources import read_records, source_path
from peftcore.data.split import split_order, split_sha256
from peftcore.data.tasks import clear_caches, load_task, source_size, usable_records

__all__ = [
    "ALGORITHM_VERSION",
    "FILTERS",
    "Example",
    "Records",
    "TaskData",
    "cache_dir",
    "canonical_json",
    "clear_caches",
    "drop_bracket_tags",
    "load_task",
    "read_records",
    "record_uid",
    "register_filter",
    "resolve_label",
    "source_path",
    "source_size",
    "split_order",
    "split_sha256",
    "usable_records",
]
