"""pytest-xdist workers: each gets its own devices or CPU cores, and the controller gets the records.

``pytest benchmarks -n 4`` starts four worker processes (pytest-xdist schedules the cases). The
controller hands every worker the run id (one run folder for all) and its share of the machine:

- GPUs: ``--devices 0,1,2,3`` (default: ``CUDA_VISIBLE_DEVICES``) split into contiguous groups,
  one per worker, set as the worker's ``CUDA_VISIBLE_DEVICES`` before torch is imported (more
  workers than devices: they take turns, round robin);
- CPU: the cores this process may use, split into disjoint sets (the worker is pinned to its
  set with ``sched_setaffinity``) and ``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set to their
  number, so workers do not oversubscribe (a value the user set is kept).

Each worker keeps its own session caches (base model, data). The case's record travels to the
controller in the test report's ``user_properties``; the controller alone checks the
``compare:`` rules over all cases, ``--metric-compare-fail``, writes the report and prints the
summary (:mod:`peftcore.pytest_plugin.hooks`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

RECORD_PROPERTY = "peftcore_record"  # the user_properties key a worker's record travels under


@dataclass(frozen=True)
class Share:
    """What one worker may use."""

    cpus: tuple[int, ...]
    threads: int
    devices: tuple[str, ...]  # GPU ids for CUDA_VISIBLE_DEVICES; empty: none given


def split(items: Sequence[Any], index: int, count: int) -> tuple[Any, ...]:
    """Contiguous share ``index`` (0-based) of ``count`` of ``items``; with fewer items than
    shares, share ``index`` gets item ``index mod len(items)`` (round robin)."""
    if not items:
        return ()
    if len(items) < count:
        return (items[index % len(items)],)
    start, stop = index * len(items) // count, (index + 1) * len(items) // count
    return tuple(items[start:stop])


def worker_share(index: int, count: int, cpus: Sequence[int], devices: Sequence[str]) -> Share:
    mine = split(sorted(cpus), index, count)
    return Share(tuple(mine), max(1, len(mine)), tuple(split(list(devices), index, count)))


def parse_devices(text: str | None) -> list[str]:
    """``"0,1,2"`` -> ``["0", "1", "2"]`` (GPU indexes or UUIDs, as CUDA_VISIBLE_DEVICES takes)."""
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def devices_given(config: pytest.Config) -> list[str]:
    return parse_devices(config.getoption("--devices") or os.environ.get("CUDA_VISIBLE_DEVICES"))


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    """The process that schedules xdist workers (runs no case itself)."""
    if is_worker(config) or not config.pluginmanager.hasplugin("xdist"):
        return False
    return config.getoption("dist", "no") != "no" and not config.getoption("collectonly")


def take_share(config: pytest.Config) -> Share | None:
    """On an xdist worker: claim this worker's devices and cores (before torch is imported).
    Without xdist, ``--devices`` alone limits the session to those GPUs."""
    if not is_worker(config):
        given = config.getoption("--devices")
        if given:
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(parse_devices(given))
        return None
    workerinput: dict[str, Any] = config.workerinput  # type: ignore[attr-defined]
    index = int(str(workerinput["workerid"]).removeprefix("gw"))
    count = int(workerinput["workercount"])
    cpus = (
        sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else list(range(os.cpu_count() or 1))
    )
    share = worker_share(index, count, cpus, devices_given(config))
    if share.devices:
        os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(share.devices)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, share.cpus)
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(share.threads))
    return share


class Controller:
    """Registered on the xdist controller: collects the records workers send with their reports."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for key, value in report.user_properties:
            if key == RECORD_PROPERTY and isinstance(value, dict):
                self.records[str(value["case_id"])] = value
