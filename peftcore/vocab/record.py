"""The case record: what one case measured, as one JSON object. Its definition is below.

A record is plain JSON (a ``dict`` at run time) so that a run folder, a pytest-benchmark JSON
file (``extra_info["peftcore_record"]``) and a notebook all read the same thing; the classes
here are ``TypedDict``s, so the type checker holds every reader and writer to these fields.

The cost figures a record carries (``FIGURES``) are derived from the field annotations:
a field annotated ``Annotated[<type>, Figure(unit, higher_is_better)]`` is a figure that gates,
baselines and reports can name; its direction (``True``: higher is better, ``False``: lower is
better, ``None``: neither, a count) is declared once, here, as metric directions are declared
with each metric's name (:mod:`peftcore.vocab.metrics`).
"""

from __future__ import annotations

import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict

from peftcore.errors import PeftcoreError

RECORD_FORMAT = 1
Status = Literal["finished", "failed", "oom", "cancelled"]
STATUSES: tuple[str, ...] = typing.get_args(Status)


@dataclass(frozen=True)
class Figure:
    """A cost figure's unit and direction (``None``: no better or worse, e.g. a step count)."""

    unit: str
    higher_is_better: bool | None


LOWER, HIGHER = False, True


class BaseModelInfo(TypedDict, total=False):
    """How the case's base model was loaded (the variant its cases share)."""

    load_seconds: Annotated[float, Figure("seconds", LOWER)]
    footprint_bytes: Annotated[int, Figure("bytes", LOWER)]  # get_memory_footprint() once loaded
    quantization: str  # none | nf4 | fp4 | int8
    double_quant: bool | None  # 4-bit only
    compute_dtype: str | None  # quantized bases only
    dtype: str  # what the unquantized parts are held in
    device: str
    sha256: str  # identity of the weights (see peftcore.models.checkpoints.model_sha256)


class TrainingFigures(TypedDict, total=False):
    """What training cost and gave. ``None`` in a record of an untrained (``base``) case."""

    trainable_params: Annotated[int, Figure("params", LOWER)]
    total_params: Annotated[int, Figure("params", None)]  # 4-bit weights counted unpacked
    trainable_percent: Annotated[float, Figure("percent", LOWER)]
    steps: Annotated[int, Figure("steps", None)]  # optimizer steps taken
    # wall time of trainer.train() (over several processes: the slowest rank's)
    train_seconds: Annotated[float, Figure("seconds", LOWER)]
    train_tokens: Annotated[int, Figure("tokens", None)]  # real (non-padding) tokens trained on
    padded_tokens: int  # all positions of the batches, padding included
    padding_fraction: float
    tokens_per_second: Annotated[float, Figure("tokens/s", HIGHER)]  # real tokens per second (all ranks)
    labeled_tokens: int  # tokens the loss is on
    # what training.max_length cut from the training examples: examples, prompt_cut (lost the
    # start of the prompt), prompt_lost (kept none of its words), answer_cut
    truncation: dict[str, int]
    # the most examples a batch held: training.batch_size, or each process's share of a train
    # split smaller than that (the data loader gives the whole split as one short batch)
    effective_batch_size: int
    # Speed levers as they applied (training.lm_head, training.fast_dropout): labeled | all, the
    # reason a labeled-only head was not possible, dropout modules swapped for FastDropout.
    lm_head: str
    lm_head_reason: str
    lm_head_positions: int  # positions the LM head computed
    fast_dropout_modules: int
    # Model FLOPs utilization (peftcore/train/flops.py): the loss's FLOPs over the run, per
    # second, and as a fraction of the device's best matmul peak in any precision it could
    # train in, measured in the same process (a run in a slow precision shows as low MFU).
    model_flops: int
    flops_per_second: int
    peak_flops_per_second: int  # the best peak, reached in peak_precision
    peak_precision: str
    precision_peak_flops_per_second: int  # the peak in the precision the run trained in
    mfu: float
    mfu_unavailable: str  # why not (a config the FLOP count does not know)
    precision: str  # bf16 | fp16 | fp32 (autocast) as resolved on the device
    # why: set in the spec, or auto's measured choice (peftcore.device.precision_choice) with
    # each candidate's FLOP/s at a decoder's matmul shapes
    precision_reason: str
    precision_flops_per_second: dict[str, int]
    final_loss: Annotated[float | None, Figure("loss", LOWER)]
    loss_curve: list[list[float]]  # [[step, loss], ...], every logged step
    adapter_bytes: Annotated[int, Figure("bytes", LOWER)]  # safetensors files save_pretrained wrote
    peak_memory_bytes: Annotated[int, Figure("bytes", LOWER)]  # above the level before the case
    peak_reserved_bytes: Annotated[int | None, Figure("bytes", LOWER)]  # CUDA allocator only
    memory_method: str  # cuda-max-allocated | cpu-rss-hwm | cpu-rss-sampled
    # Trained over several processes (training.processes > 1, DDP under torchrun): how many; each
    # rank's peak above its level before it loaded the base (peak_memory_bytes is the largest;
    # the counts above are over every rank); and the whole launch's wall time (start-up, each
    # rank loading the base, training, saving), of which train_seconds is the training.
    processes: int
    peak_memory_bytes_per_rank: list[int]
    parameters_held_per_rank: list[int]  # FSDP: the parameters each rank held (its shards)
    launch_seconds: Annotated[float, Figure("seconds", LOWER)]
    # The live-tensor peak of the first live_tracked_steps steps (torch's MemTracker): what the
    # method allocates, without what the allocator keeps; and its parts by kind.
    live_peak_bytes: Annotated[int, Figure("bytes", LOWER)]
    live_peak_by_kind: dict[str, int]  # parameters, gradients, optimizer_states, activations, ...
    live_tracked_steps: int
    adalora_updates: int  # AdaLoRA only: rank reallocations done
    adalora_final_rank_total: int
    adalora_initial_rank_total: int | None


class InferenceFigures(TypedDict, total=False):
    """What scoring the held-out split cost (the model's work only, not metric computation)."""

    examples: int
    seconds: float
    latency_ms_per_example: Annotated[float, Figure("ms", LOWER)]
    examples_per_second: Annotated[float, Figure("examples/s", HIGHER)]
    peak_memory_bytes: Annotated[int, Figure("bytes", LOWER)]
    memory_method: str
    precision: str
    batch_size: int
    # ...and the evaluator's own details: padding_fraction, forward_tokens, requests,
    # shared_context (choices); max_new_tokens, generated_tokens, shared_prefix_tokens
    # (generation); window, stride, windows (perplexity).


class GeneralTextFigures(TypedDict, total=False):
    """Forgetting: what the case's model lost on general text (profile ``eval.forgetting``).

    Both losses are the mean next-token cross-entropy (targets shifted by one) over the same
    documents, cut to ``max_tokens``; "before" is the untouched base model of the case's variant
    (a quantized base for QLoRA; no adapter at all for prompt or prefix tuning), computed once
    per base variant and session. Forgetting is ``after_loss - before_loss``: zero for the
    untrained base, positive when fine-tuning made general text less predictable.
    """

    task: str  # the language_modeling task whose held-out texts were scored
    documents: int
    max_tokens: int
    tokens: int  # tokens scored (each document's first token predicts nothing)
    before_loss: Annotated[float, Figure("nats/token", LOWER)]  # the untouched base model
    after_loss: Annotated[float, Figure("nats/token", LOWER)]  # the case's model
    forgetting: Annotated[float, Figure("nats/token", LOWER)]  # after_loss - before_loss
    seconds: float  # scoring the case's model (the base's "before" is not counted)


class DeploymentFigures(TypedDict, total=False):
    """What a deployment variant costs to ship and run (``record["deploy"][<variant>]``, and the
    ``deployment`` block of the variant's row in gates and reports)."""

    size_bytes: Annotated[int, Figure("bytes", LOWER)]  # the variant's files on disk
    load_seconds: Annotated[float, Figure("seconds", LOWER)]  # loading it as deployed
    build_seconds: Annotated[float, Figure("seconds", LOWER)]  # merge (+ GGUF write) from the adapter
    footprint_bytes: Annotated[int, Figure("bytes", LOWER)]  # bitsandbytes: get_memory_footprint()
    generation_tokens_per_second: Annotated[float, Figure("tokens/s", HIGHER)]  # llama.cpp, wall clock
    # llama-bench on the GGUF file: mean tokens/s over its repetitions, and the child's peak memory
    llama_bench_prompt_tokens_per_second: Annotated[float, Figure("tokens/s", HIGHER)]
    llama_bench_generation_tokens_per_second: Annotated[float, Figure("tokens/s", HIGHER)]
    llama_bench_peak_rss_bytes: Annotated[int, Figure("bytes", LOWER)]


class MetricUncertainty(TypedDict, total=False):
    """How a metric varies with the examples it was scored on (peftcore.score.uncertainty)."""

    stderr: float
    ci_low: float
    ci_high: float
    confidence: float  # 0.95
    method: str  # wilson | normal | bootstrap
    n: int  # examples counted
    resamples: int  # bootstrap only
    seed: int  # bootstrap only


def keep_scores(into: Any, split: str, result: Any) -> None:
    """Put a scored split's metrics, their uncertainty and its per-example scores into ``into``
    (a record, or a deployment variant's block) under ``split``."""
    into.setdefault("metrics", {})[split] = result.metrics
    into.setdefault("uncertainty", {})[split] = result.uncertainty
    into.setdefault("examples", {})[split] = result.examples


class DeployFigures(TypedDict, total=False):
    """One deployment variant of a case (profile ``deploy:``, peftcore.pipeline.deploy)."""

    status: str  # finished | not_mergeable | skipped | failed
    reason: str | None
    kind: str  # merged | bnb | gguf
    variant_hash: str  # the case's hash, the variant, its settings and tools' versions
    tool: str  # what wrote it, with its version
    provenance: dict[str, Any]  # merged_with, merged_into, trained_on, adapter_dir
    quantization: dict[str, Any]  # bnb: type, double_quant, compute_dtype
    writer: str  # what made it: peft | bitsandbytes | gguf | llama-quantize (vocab/variants)
    gguf: dict[str, Any]  # type, tensors; fallback_f16 (gguf) or from, tensor_types (llama-quantize)
    llama_quantize: dict[str, Any]  # K-quants: threads, folder, build (the tools' build.json)
    file: str | None
    size_bytes: int
    load_seconds: float
    build_seconds: float
    footprint_bytes: int
    metrics: dict[str, dict[str, float]]  # held_out, seen: the case's evaluator and settings
    uncertainty: dict[str, dict[str, MetricUncertainty]]  # as the record's
    examples: dict[str, dict[str, Any]]  # as the record's
    inference: InferenceFigures | None
    llama_cpp: dict[str, Any]  # status, tokens_per_second, llama.cpp's own counters, ...
    # status; prompt, generation: {tokens, tokens_per_second, sd, samples}; peak_rss_bytes
    llama_bench: dict[str, Any]


class Provenance(TypedDict, total=False):
    """Where the numbers come from: enough to reproduce them or to know why they differ."""

    versions: dict[str, str | None]  # peftcore's carries a fingerprint of its numeric code
    device: dict[str, Any]  # peftcore.device.device_info
    model_sha256: str
    data_sha256: str  # the source's usable records
    split_sha256: str  # the uids of train, held_out and seen, in order
    split_sizes: dict[str, int]
    git_commit: str | None
    git_dirty: bool | None
    host: str
    started_at: str  # ISO 8601, UTC
    finished_at: str | None


class _RecordKeys(TypedDict):
    format: int  # RECORD_FORMAT
    run_id: str  # the run folder the record is in
    case_id: str  # <method>-<model>-<task>[-seed<N>]
    method: str
    model: str
    task: str
    status: Status


class Record(_RecordKeys, total=False):
    """One case. A record that did not finish says why (``reason``) and how far it got."""

    case_hash: str  # everything that determines the record (peftcore.pipeline.identity)
    training_hash: str  # everything that determines the trained weights
    profile: str
    seed: int
    reason: str | None  # why it did not finish; null when finished
    spec: dict[str, Any]  # the fully resolved case spec
    base_model: BaseModelInfo
    training: TrainingFigures | None
    # {"held_out": {name: value}, "seen": {...}}, and one "ood.<task>" per other task the profile
    # scores every case on (eval.also_score: that task's held-out split, its own metrics)
    metrics: dict[str, dict[str, float]]
    # Per split and metric: its standard error and 95% interval (peftcore.score.uncertainty).
    uncertainty: dict[str, dict[str, MetricUncertainty]]
    # Per split: every example's uid and per-example scores (peftcore.score.evaluator.ExampleScores),
    # what paired comparisons and the statistical baseline gate pair on; read by load_examples.
    examples: dict[str, dict[str, Any]]
    general_text: GeneralTextFigures  # eval.forgetting only
    inference: InferenceFigures | None
    predictions: dict[str, list[dict[str, Any]]]  # {"held_out": the first 20 predictions}
    provenance: Provenance
    adapter_dir: str | None  # the adapter's folder, relative to the run folder
    reused_training_from: str | None  # re-scored: the run whose adapter was scored
    cached_from: str  # adopted: the run that computed the record
    deploy: dict[str, DeployFigures]  # profile deploy: one block per variant
    # A search's trial (kind trial: its values and objective on the tuning split), a compared
    # run at the values its trials chose (kind tuned: every trial's objective, the choice, why)
    # or a run at the method's own values beside it (kind default, tune.compare_default); each
    # with the searched keys' own values (defaults). peftcore.pipeline.tuning.record_block.
    tuning: dict[str, Any]
    # A variant's row (peftcore.results.variants.with_variants), never stored: its costs, and
    # the case it was derived from.
    deployment: DeploymentFigures
    variant_of: str


REQUIRED_KEYS: tuple[str, ...] = tuple(_RecordKeys.__annotations__)
METRIC_BLOCKS = ("held_out", "seen")
TUNE_SPLIT = "tune"  # a search's trial's only scored split (data.tune examples)
OOD_PREFIX = "ood."  # metrics["ood.<task>"]: another task's held-out metrics (out of distribution)
# The cost blocks of a record and the TypedDict that declares each one's fields.
COST_BLOCKS: dict[str, type] = {
    "training": TrainingFigures,
    "inference": InferenceFigures,
    "base_model": BaseModelInfo,
    "general_text": GeneralTextFigures,
    "deployment": DeploymentFigures,
}


def _figures(cls: type) -> dict[str, Figure]:
    hints = typing.get_type_hints(cls, include_extras=True)
    return {
        name: meta
        for name, hint in hints.items()
        for meta in getattr(hint, "__metadata__", ())
        if isinstance(meta, Figure)
    }


# Block -> figure name -> Figure: every cost figure a record can carry.
FIGURES: dict[str, dict[str, Figure]] = {block: _figures(cls) for block, cls in COST_BLOCKS.items()}


def figure_direction(name: str) -> bool | None:
    """Direction of a cost figure by its bare name (the same in every block that has it)."""
    for figures in FIGURES.values():
        if name in figures:
            return figures[name].higher_is_better
    return None


def is_figure(name: str) -> bool:
    return any(name in figures for figures in FIGURES.values())


class RecordError(PeftcoreError):
    """A record file cannot be used (corrupted, another format, missing keys)."""


def check_record(data: Mapping[str, Any], where: str) -> Record:
    """``data`` itself when it is a record of ``RECORD_FORMAT`` with the required keys and a known
    status; RecordError otherwise, its message starting with ``where`` (a path, a benchmark)."""
    if data.get("format") != RECORD_FORMAT:
        raise RecordError(
            f"{where}: record format {data.get('format')!r}, this peftcore reads {RECORD_FORMAT}"
        )
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise RecordError(f"{where}: missing keys {', '.join(missing)}")
    if data["status"] not in STATUSES:
        raise RecordError(f"{where}: unknown status {data['status']!r}")
    return typing.cast(Record, data)


# --------------------------------------------------------------------------- identity across runs


def case_seed(record: Mapping[str, Any]) -> int:
    """The training seed: the record's ``seed``, else the resolved spec's, else the id's suffix."""
    seed = record.get("seed")
    if seed is None:
        seed = ((record.get("spec") or {}).get("training") or {}).get("seed")
    if seed is None:
        match = re.search(r"-seed(\d+)$", str(record.get("case_id", "")))
        seed = int(match.group(1)) if match else 0
    return int(seed)


CaseKey = tuple[str, str, str, int]


def case_name(record: Mapping[str, Any]) -> str:
    """``<method>-<model>-<task>``: a case whatever its seed."""
    return f"{record['method']}-{record['model']}-{record['task']}"


def case_key(record: Mapping[str, Any]) -> CaseKey:
    """(method, model, task, seed): what matches a case across runs, seed suffix or not (a
    search's trial is ``<method>/trial<N>`` and a default run beside the tuned ones
    ``<method>/default``: neither is the method's compared run)."""
    method = str(record["method"])
    if is_trial(record):
        method += f"/trial{record['tuning'].get('index', 0)}"
    elif is_default_run(record):
        method += "/default"
    return (method, str(record["model"]), str(record["task"]), case_seed(record))


def is_trial(record: Mapping[str, Any]) -> bool:
    """A search's trial (scored on the tuning split only): not a row of any comparison."""
    tuning = record.get("tuning")
    return isinstance(tuning, Mapping) and tuning.get("kind") == "trial"


def is_default_run(record: Mapping[str, Any]) -> bool:
    """A method's run at its own values beside its tuned runs (profile ``tune.compare_default``)."""
    tuning = record.get("tuning")
    return isinstance(tuning, Mapping) and tuning.get("kind") == "default"


def is_search_only(record: Mapping[str, Any]) -> bool:
    """A search's trial or default run: read by the report's Tuning section, never a row of the
    comparison nor checked by a gate (the tuned runs are the method's compared runs)."""
    return is_trial(record) or is_default_run(record)


# A trial's pruning is read by the search (peftcore.pipeline.tuning), by load_results and by the
# report, which may not import one another: so it is read here, beneath all three.
def pruning_block(record: Mapping[str, Any]) -> Mapping[str, Any]:
    """A trial record's ``tuning.pruning`` (empty without a pruner)."""
    return ((record.get("tuning") or {}).get("pruning")) or {}


def pruned_at_step(record: Mapping[str, Any]) -> int | None:
    """The step at which the pruner stopped the trial; None when it was not pruned (it ran to
    its last step, or its search has no pruner)."""
    step = pruning_block(record).get("pruned_at_step")
    return int(step) if isinstance(step, (int, float)) else None


def finished_at(record: Mapping[str, Any]) -> str:
    """When the record was finished (ISO 8601 in UTC, so it sorts as text); "" when unknown."""
    provenance = record.get("provenance")
    value = provenance.get("finished_at") if isinstance(provenance, Mapping) else None
    return value if isinstance(value, str) else ""


def task_metrics(record: Mapping[str, Any]) -> tuple[str, ...]:
    """The metrics the case's task declares, in order (the first is its primary metric)."""
    task = ((record.get("spec") or {}).get("task")) or {}
    names = task.get("metrics") if isinstance(task, Mapping) else None
    return tuple(str(n) for n in names) if isinstance(names, (list, tuple)) else ()


def primary_metric(record: Mapping[str, Any]) -> str | None:
    """The task's first declared metric, else the first held-out metric the record carries."""
    declared = task_metrics(record)
    if declared:
        return declared[0]
    held_out = (record.get("metrics") or {}).get("held_out") or {}
    return next(iter(held_out), None)
