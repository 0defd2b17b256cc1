"""What one pytest session keeps for its hooks and its fixtures, in the config's stash.

The hooks load the spec store at configure time; the fixtures make the case pipeline at its
first use; both reach a results URL's store through :func:`remote_results`. A module of its own,
so that the hooks and the fixtures import it and never each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from peftcore.pytest_plugin import options
from peftcore.spec import SpecStore

if TYPE_CHECKING:
    from peftcore.pipeline.session import BenchmarkSession
    from peftcore.results.remote import RemoteResults

# the case pipeline (fixtures.benchmark_session)
SESSION: pytest.StashKey[BenchmarkSession] = pytest.StashKey()
SPEC_STORE = pytest.StashKey[SpecStore | None]()  # None: the spec folder did not load


def spec_store(config: pytest.Config) -> SpecStore:
    """The session's spec store (raises the SpecError that made it unusable)."""
    store = config.stash.get(SPEC_STORE, None)
    return store if store is not None else SpecStore(options.spec_dir(config))


def remote_results(config: pytest.Config) -> RemoteResults | None:
    """The results URL's store (``--results-dir s3://...``), or None for a local folder."""
    url, mirror = options.results_location(config)
    if url is None:
        return None
    from peftcore.results.remote import RemoteResults

    return RemoteResults(url, mirror)
