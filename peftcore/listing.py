"""``peftcore list``: what the spec directory offers, one line each."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError, SpecError
from peftcore.offline import set_offline_env
from peftcore.spec import KINDS, SpecStore
from peftcore.spec.cases import expand

DEFAULT_SPECS = Path("benchmarks/specs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=KINDS, help="list only this kind")
    parser.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="spec directory (default: %(default)s)"
    )
    parser.add_argument(
        "--allow-network",
        action="store_true",
        help="check specs as a run with --allow-network would (hub models and metrics allowed)",
    )


def describe(kind: str, spec: Any, cases: int | None = None) -> str:
    """One line for a spec; ``cases`` is how many cases a profile expands into, when known."""
    if kind == "models":
        src = spec.source
        where = {"hub": src.id, "local": src.path, "gguf_package": f"{src.package}:{src.file}"}[src.kind]
        return (
            f"{spec.description} [{src.kind}: {where}; {spec.params or '?'} params; license {spec.license}]"
        )
    if kind == "methods":
        quant = spec.base.quantization
        base = "" if quant == "none" else f", {quant} base"
        return f"{spec.description} [tuner {spec.tuner}{base}]"
    if kind == "tasks":
        src = spec.source
        where = src.id if src.kind == "hub" else f"{src.package + ':' if src.package else ''}{src.path}"
        size = _task_size(spec)
        return f"{spec.description} [{spec.type}; {src.kind}: {where}; {size}; license {spec.license}]"
    matrix = f"{len(spec.methods)} methods x {len(spec.models)} models x {len(spec.tasks)} tasks"
    if spec.grids:
        matrix += f" + {len(spec.grids)} more grid{'s' if len(spec.grids) > 1 else ''}"
    if cases is not None:
        matrix += f" = {cases} cases"
    return f"{spec.description} [{matrix}]"


def _task_size(spec: Any) -> str:
    from peftcore.data.tasks import source_size

    try:
        return f"{source_size(spec):,} examples"
    except (PeftcoreError, OSError) as err:
        return f"unavailable here: {err}"


def _availability(spec: Any, offline: bool) -> str:
    """ "" when the model's weights can be had here, else why not (shown, not an error: an opt-in
    model that is not installed, a hub model offline)."""
    from peftcore.models.checkpoints import check_available

    try:
        check_available(spec, offline=offline)
    except PeftcoreError as err:
        return f" -- unavailable here: {err}"
    return ""


def run(args: argparse.Namespace) -> int:
    if not args.allow_network:
        set_offline_env()  # specs are checked as an offline run checks them
    store = SpecStore(args.specs)
    failed = 0
    for kind in [args.kind] if args.kind else KINDS:
        print(f"{kind}:")
        names = store.names(kind)
        width = max((len(n) for n in names), default=0)
        for name in names:
            try:
                spec = store.get(kind, name)
                # Expanding a profile checks the names it lists, which loading it alone does not.
                cases = len(expand(store, name)) if kind == "profiles" else None
                line = describe(kind, spec, cases)
                if kind == "models":
                    line += _availability(spec, offline=not args.allow_network)
            except SpecError as err:
                failed += 1
                line = f"!! {err}"
            print(f"  {name:<{width}}  {line}")
    return 1 if failed else 0
