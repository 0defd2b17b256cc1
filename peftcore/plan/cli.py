"""``peftcore estimate``: the command line of the planner, and what it prints.

Each method is estimated with the training budget a benchmark case of it would train with:
the layers of ``peftcore.spec.resolve_training`` (defaults < task < profile < method), then the
command line's ``--seq-len``, ``--batch-size``, ... over them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from peftcore.errors import SpecError
from peftcore.plan.errors import PlannerError
from peftcore.plan.estimator import Estimate, estimate_model
from peftcore.plan.ladder import Quality, ladder, measured_quality
from peftcore.plan.memory import MEMORY_MODEL
from peftcore.plan.models import DEFAULT_SPECS, ModelInfo, resolve_model
from peftcore.spec import DEFAULT_PROFILE, MethodSpec, ProfileSpec, SpecStore, TaskSpec, resolve_training
from peftcore.units import UNITS_HELP, format_bytes, parse_bytes

DEFAULT_RESULTS = Path("reports/runs")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Predict trainable parameters, adapter size and peak training memory of PEFT methods from a "
        "model's config alone (the model is built on the meta device; no weights are read)."
    )
    parser.epilog = MEMORY_MODEL
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "--model", required=True, help="model spec name, shipped config name, path to config.json, or hub id"
    )
    parser.add_argument(
        "--method", action="append", default=None, help="method spec name (repeatable; default: every method)"
    )
    parser.add_argument(
        "--profile",
        default=DEFAULT_PROFILE,
        help="the training budget is that of a case in this profile (default: %(default)s); "
        "its inline method variants can be named with --method",
    )
    parser.add_argument(
        "--task", default=None, help="the training budget is that of a case on this task (default: none)"
    )
    parser.add_argument(
        "--seq-len", type=int, default=None, help="tokens per sequence (default: the case's max_length)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="sequences per step (default: the case's batch_size)"
    )
    parser.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        default=None,
        help="recompute activations in backward",
    )
    parser.add_argument(
        "--optimizer",
        choices=("adamw_torch", "adamw_bnb_8bit"),
        default=None,
        help="default: the case's optimizer",
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default=None,
        help="training precision (default: the case's; auto = bf16 autocast where the device has it)",
    )
    parser.add_argument(
        "--dtype",
        choices=("fp32", "bf16", "fp16"),
        default=None,
        help="dtype of the full-precision base (default: the model spec's, else fp32)",
    )
    parser.add_argument(
        "--no-padding",
        dest="padded",
        action="store_false",
        help="equal-length sequences (no attention mask); default: padded batches, as the engine pads",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        type=_device,
        help="device the case trains on: cpu, cuda or cuda:N (default: %(default)s)",
    )
    parser.add_argument(
        "--budget", default=None, help=f"memory budget, {UNITS_HELP}: list the methods that fit"
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per method, one per line")
    parser.add_argument(
        "--specs", type=Path, default=DEFAULT_SPECS, help="spec directory (default: %(default)s)"
    )
    parser.add_argument(
        "--results",
        type=Path,
        default=DEFAULT_RESULTS,
        help="stored runs for the ladder's quality (default: %(default)s)",
    )


def budget_bytes(text: str) -> int:
    """The ``--budget`` option in bytes (``24GB``, ``24GiB``, ``12G``, ...); PlannerError naming
    the option when it cannot be read."""
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise PlannerError(f"--budget: {err}") from None


def run(args: argparse.Namespace) -> int:
    """Estimate every method asked for (default: every method spec), print the table or JSON
    lines, and with ``--budget`` the ladder. Errors are PeftcoreErrors (one line each)."""
    budget = budget_bytes(args.budget) if args.budget is not None else None
    store = SpecStore(args.specs)
    profile: ProfileSpec = _named(store, "profiles", args.profile, "--profile")
    task: TaskSpec | None = _named(store, "tasks", args.task, "--task") if args.task else None
    methods = [_method(store, profile, name) for name in args.method or store.names("methods")]
    info = resolve_model(args.model, args.specs, args.dtype)
    overrides = _budget_overrides(args)
    estimates: list[Estimate] = []
    failed: list[tuple[str, str]] = []
    for method in methods:
        training = resolve_training(store, profile, method, task, overrides)
        try:
            estimates.append(estimate_model(info, method, training, args.device, args.padded))
        except PlannerError as err:
            if args.method:  # asked for by name: an error
                raise
            failed.append((method.name, str(err)))
    if args.json:
        for est in estimates:
            print(json.dumps({**est.to_json(), "profile": profile.name, "task": task.name if task else None}))
        for name, reason in failed:
            print(json.dumps({"method": name, "model": info.name, "error": reason}))
    else:
        _print_table(info, estimates, failed, _budget_origin(profile, task))
    if budget is not None:
        quality, how = measured_quality(args.results, info.name)
        out = sys.stderr if args.json else sys.stdout
        _print_ladder(ladder(estimates, budget, quality), args.budget, budget, how, out)
    return 0


def _named(store: SpecStore, kind: str, name: str, option: str) -> Any:
    try:
        return store.get(kind, name)
    except SpecError as err:
        raise PlannerError(f"{option}: {err}") from None


def _method(store: SpecStore, profile: ProfileSpec, name: str) -> MethodSpec:
    """A method spec, or an inline variant of the profile (e.g. one rank of a sweep)."""
    if name in profile.variants:
        return store.method_variant(profile, name)
    method: MethodSpec = store.get("methods", name)
    return method


def _budget_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The training keys the command line sets; the others come from the specs."""
    given = {
        "max_length": args.seq_len,
        "batch_size": args.batch_size,
        "gradient_checkpointing": args.gradient_checkpointing,
        "optimizer": args.optimizer,
        "precision": args.precision,
    }
    return {k: v for k, v in given.items() if v is not None}


def _budget_origin(profile: ProfileSpec, task: TaskSpec | None) -> str:
    return f"profile {profile.name}" + (f", task {task.name}" if task else "")


def _print_table(
    info: ModelInfo, estimates: Sequence[Estimate], failed: Sequence[tuple[str, str]], origin: str
) -> None:
    if estimates:
        e0 = estimates[0]
        assumption = f" ({e0.precision_assumption})" if e0.precision_assumption else ""
        print(
            f"{info.name} ({info.source}), base {info.dtype}, device {e0.device}, {e0.precision} "
            f"activations{assumption}, batch {e0.batch_size} x {e0.seq_len} tokens"
            + (", gradient checkpointing" if e0.gradient_checkpointing else "")
            + f"; budget of {origin}"
        )
    header = (
        "method",
        "trainable",
        "%",
        "adapter",
        "base",
        "grads+optim",
        "activ.",
        "logits",
        "peak case",
        "+framework",
    )
    rows = []
    for e in estimates:
        pct = 100 * e.trainable_params / e.total_params if e.total_params else 0.0
        rows.append(
            (
                e.method,
                f"{e.trainable_params:,}",
                f"{pct:.2f}",
                format_bytes(e.adapter_bytes),
                format_bytes(e.part("base_weights")),
                format_bytes(e.part("gradients") + e.part("optimizer_states")),
                format_bytes(e.part("activations") + e.part("autocast_copies")),
                format_bytes(e.part("loss_logits")),
                format_bytes(e.peak_case_bytes),
                format_bytes(e.peak_process_bytes),
            )
        )
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print(
            "  ".join(
                str(c).rjust(w) if i else str(c).ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    for name, reason in failed:
        print(f"{name}: not applicable: {reason}")
    print(
        "peak case = what PeakMemory measures (above the level before the case); "
        "+framework adds the process's fixed cost."
    )


def _print_ladder(
    fitting: Sequence[tuple[Estimate, Quality | None]], given: str, budget: int, how: str, out: TextIO
) -> None:
    print(f"\nmethods that fit {given} (= {format_bytes(budget)}; peak case + framework):", file=out)
    if not fitting:
        print("  none", file=out)
    for rank, (e, q) in enumerate(fitting, 1):
        score = f"quality {q.score:.2f} over {q.tasks} task(s)" if q else "no stored results"
        print(f"  {rank}. {e.method}: {format_bytes(e.peak_process_bytes)}; {score}", file=out)
    print("  ordered by " + (how if how else "predicted memory (no stored results)"), file=out)


def _device(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``: the devices the engine trains on (argparse's type)."""
    import re

    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text
