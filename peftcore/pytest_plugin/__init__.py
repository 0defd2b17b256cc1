"""The peftcore pytest plugin: a profile of specs becomes one parametrized case per method x model x task.

Registered through the ``pytest11`` entry point (``peftcore = peftcore.pytest_plugin``): after
``pip install peftcore``, a project with a spec directory (``benchmarks/specs/`` or ``--specs``)
needs nothing else; ``pytest benchmarks`` runs its grid. The hooks are in
:mod:`~peftcore.pytest_plugin.hooks`, the fixtures in :mod:`~peftcore.pytest_plugin.fixtures`,
the options in :mod:`~peftcore.pytest_plugin.options`, the grid's test in
:mod:`~peftcore.pytest_plugin.grid`; the network guard is :mod:`peftcore.offline`.
"""

from peftcore.pytest_plugin.fixtures import (
    base_models,
    peftcore_device,
    peftcore_run_dir,
    peftcore_runner,
    peftcore_session,
    task_data,
)
from peftcore.pytest_plugin.hooks import (
    pytest_addoption,
    pytest_benchmark_compare_machine_info,
    pytest_collect_file,
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_configure_node,
    pytest_generate_tests,
    pytest_sessionfinish,
    pytest_terminal_summary,
)

__all__ = [
    "base_models",
    "peftcore_device",
    "peftcore_run_dir",
    "peftcore_runner",
    "peftcore_session",
    "pytest_addoption",
    "pytest_benchmark_compare_machine_info",
    "pytest_collect_file",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_configure_node",
    "pytest_generate_tests",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "task_data",
]
