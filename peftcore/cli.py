"""The ``peftcore`` console script.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``; those modules import nothing heavy at start-up (torch, transformers,
matplotlib load inside ``run``), so ``peftcore list`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from peftcore.errors import PeftcoreError

# name -> (module, one-line help)
COMMANDS = {
    "list": ("peftcore.listing", "list models, methods, tasks and profiles with their descriptions"),
    "estimate": ("peftcore.plan.cli", "predict trainable parameters, adapter size and peak memory"),
    "report": ("peftcore.report.cli", "build summary tables and an HTML report from stored runs"),
    "tolerances": (
        "peftcore.gates.tolerances",
        "measure per-case tolerances (or, --statistical, noise) for --metric-compare-fail from a run of "
        "several seeds",
    ),
    "llama-cpp": (
        "peftcore.deploy.cli",
        "build llama.cpp's tools (llama-quantize, llama-perplexity, llama-bench) for the K-quant GGUF "
        "variants, or say where they are (status)",
    ),
    "baseline": (
        "peftcore.gates.baseline_file",
        "write the baseline of one seed from a pytest-benchmark JSON file of several seeds",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="peftcore", description="Parameter-efficient fine-tuning benchmark")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        module = importlib.import_module(module_name)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except PeftcoreError as err:
        print(f"peftcore {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
