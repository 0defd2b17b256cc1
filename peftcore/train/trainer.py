"""Training a case with transformers' Trainer: budget in, loss curve and throughput out.

The Trainer (with accelerate underneath) does scheduling, accumulation, mixed precision,
clipping, optimizers (8-bit AdamW included) and tracker logging (:mod:`peftcore.train.trackers`
adds its integration callbacks); this module only wires the budget into ``TrainingArguments``
and adds what a benchmark needs on top, as callbacks: the loss curve, a NaN/inf stop, AdaLoRA's
per-step rank reallocation, and a progress line.

Batches are drawn by length (``train_sampling_strategy="group_by_length"``), so sequences of
similar length share a batch and little is padded; tokens/s counts only real tokens (the
Trainer's ``non_padding`` count), and the padded share is reported beside it.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from peftcore.device import resolve_precision
from peftcore.errors import DivergenceError, UnchangedWeightsError
from peftcore.spec import MethodSpec, TrainingBudget
from peftcore.train.outcome import TrainExtras, TrainOutcome

if TYPE_CHECKING:
    from peftcore.train.trackers import Trackers

log = logging.getLogger("peftcore.train.trainer")


def warmup_steps(budget: TrainingBudget) -> int:
    """The warm-up in optimizer steps: ``warmup_ratio`` of ``max_steps``, rounded up, and at most
    ``max_steps - 1``: a linear warm-up gives its first step a learning rate of 0, so a warm-up
    as long as the run would leave a one-step run without a single update.

    Given as a whole number of steps, because transformers reads a float ``warmup_steps``
    below 1 as a ratio but 1.0 as one step (``warmup_ratio: 1`` would warm up for one step).
    The same rounding as transformers' own for ratios below 1.

    >>> from peftcore.spec import TrainingBudget
    >>> [warmup_steps(TrainingBudget(max_steps=5, warmup_ratio=r)) for r in (0.0, 0.1, 1.0)]
    [0, 1, 4]
    >>> warmup_steps(TrainingBudget(max_steps=1, warmup_ratio=0.1))
    0
    """
    return min(math.ceil(budget.warmup_ratio * budget.max_steps), max(budget.max_steps - 1, 0))


def trainable_fingerprint(model: Any) -> list[tuple[float, float]]:
    """Each trainable tensor's sum and sum of squares, in float64: equal before and after
    training only when no update reached the weights. Summed in slices of a million values, so
    nothing near the size of the model is copied inside the case's memory window.
    """
    import torch

    found = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        total = squares = 0.0
        with torch.no_grad():
            for chunk in p.detach().reshape(-1).split(1 << 20):
                wide = chunk.double()
                total += float(wide.sum())
                squares += float(wide.square().sum())
        found.append((total, squares))
    return found


def effective_batch_size(batch_size: int, examples: int, processes: int = 1) -> int:
    """The most examples a batch of one process holds: ``batch_size``, or that process's share of
    the train split when the share is smaller (the data loader then gives the whole share as one
    short batch, each step; the spec's ``batch_size`` is not what the case trained with).

    >>> effective_batch_size(64, 40), effective_batch_size(4, 40), effective_batch_size(32, 40, processes=2)
    (40, 4, 20)
    """
    return max(0, min(batch_size, -(-examples // max(processes, 1))))


class _CountingCollator:
    """Pads a batch with the library collator and counts the positions it produced.

    The ``length`` column is only for the length-grouped sampler; it is dropped here.

    With ``labeled_only``, the batch also tells the model to compute its LM head only where a
    label is set (``training.lm_head: labeled``): ``logits_to_keep`` holds the positions whose
    next token is labeled in any row, and ``shift_labels`` the targets there. transformers'
    causal LMs take both (``logits_to_keep`` as an index tensor; the loss reads ``shift_labels``
    instead of shifting ``labels``), and the Trainer counts the loss's tokens from
    ``shift_labels``, so the loss is the same sum over the same tokens, without the logits of
    prompt positions: with answer-only loss most of a 49k-vocabulary projection, its float
    upcast and its softmax.
    """

    def __init__(self, tokenizer: Any, *, labeled_only: bool = False) -> None:
        from transformers import DataCollatorForSeq2Seq

        self.inner = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
        self.labeled_only = labeled_only
        self.positions = 0  # every position of every batch, padding included
        self.lm_head_positions = 0  # positions the LM head computed
        self.labeled_tokens = 0  # tokens with a loss (the Trainer's own count, shifted labels)
        self.squared_lengths = 0  # sum of each sequence's real length squared (attention FLOPs)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner([{k: v for k, v in row.items() if k != "length"} for row in rows])
        self.positions += int(batch["input_ids"].numel())
        self.squared_lengths += int((batch["attention_mask"].sum(dim=1) ** 2).sum())
        targets = batch["labels"][:, 1:]  # position t predicts token t + 1
        self.labeled_tokens += int((targets != -100).sum())
        if not self.labeled_only:
            self.lm_head_positions += int(batch["input_ids"].numel())
            return batch
        keep = (targets != -100).any(dim=0).nonzero().squeeze(1)
        batch["logits_to_keep"] = keep
        batch["shift_labels"] = targets[:, keep].contiguous()
        self.lm_head_positions += int(keep.numel()) * int(batch["input_ids"].shape[0])
        return batch


def lm_head_on_labeled_positions(model: Any) -> str | None:
    """Why ``model`` must compute its LM head everywhere (None when it can skip unlabeled positions).

    Prompt-learning tuners put virtual tokens before the input, which moves every position;
    a model whose forward has no ``logits_to_keep`` cannot be told which positions to keep.
    """
    import inspect

    config = getattr(model, "active_peft_config", None)
    if config is not None and getattr(config, "is_prompt_learning", False):
        return f"{config.peft_type.value.lower()} adds virtual tokens before the input"
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return f"{type(base).__name__}.forward takes no logits_to_keep"
    return None


def _callbacks(outcome: TrainOutcome, method: MethodSpec, case_id: str, max_steps: int) -> list[Any]:
    from transformers import TrainerCallback

    class LossRecorder(TrainerCallback):
        """Keeps the loss curve and stops the case at the first NaN or infinite loss."""

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            outcome.loss_curve.append((int(state.global_step), loss))
            if not math.isfinite(loss):
                raise DivergenceError(int(state.global_step), loss)

    class Progress(TrainerCallback):
        """Step, loss and tokens/s: a live bar on a terminal, else a log line every ~10%."""

        def __init__(self) -> None:
            self.bar: Any = None
            self.start = 0.0
            self.every = max(1, max_steps // 10)
            self.next_line = 1

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.start = time.perf_counter()
            if sys.stderr.isatty():
                from tqdm.auto import tqdm

                self.bar = tqdm(total=max_steps, desc=case_id, unit="step", leave=False, mininterval=0.5)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if not logs or "loss" not in logs:
                return
            elapsed = max(time.perf_counter() - self.start, 1e-9)
            rate = state.num_input_tokens_seen / elapsed
            loss = float(logs["loss"])
            if self.bar is not None:
                self.bar.update(state.global_step - self.bar.n)
                self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{rate:.0f}", refresh=False)
            elif state.global_step >= self.next_line or state.global_step == max_steps:
                self.next_line = state.global_step + self.every
                log.info(
                    "%s step %d/%d loss %.4f %.0f tokens/s", case_id, state.global_step, max_steps, loss, rate
                )

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.close()

    # LossRecorder first: a NaN stops the case before anything else sees the step.
    callbacks: list[Any] = [LossRecorder(), Progress()]
    if method.tuner == "adalora":

        class AdaLoraBudget(TrainerCallback):
            """AdaLoRA reallocates its rank budget from gradients: after each optimizer step,
            before the gradients are zeroed. The Trainer does not call it, so this does."""

            def on_optimizer_step(
                self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any
            ) -> None:
                model.base_model.update_and_allocate(state.global_step)
                outcome.extra["adalora_updates"] = outcome.extra.get("adalora_updates", 0) + 1

        callbacks.append(AdaLoraBudget())
    return callbacks


def utilization(
    model: Any, method: MethodSpec, outcome: TrainOutcome, peak_flops: Mapping[str, float]
) -> None:
    """Model FLOPs, achieved FLOP/s and MFU into ``outcome.extra`` (module peftcore.train.flops).

    ``outcome``'s counts and ``peak_flops`` must cover the same processes: a data-parallel run
    passes every rank's counts and, per precision, the sum of the ranks' peaks (peftcore.train.distributed).
    """
    from peftcore.train import flops

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        shape = flops.Shape.of(base.config)
    except AttributeError as err:  # a config without the fields of a gated-MLP decoder
        outcome.extra["mfu_unavailable"] = f"{type(base.config).__name__}: {err}"
        return
    from peftcore.train.methods import parameter_counts

    full = method.tuner == "full"
    adapter = 0 if full else parameter_counts(model)[0]
    total = flops.training_flops(
        shape,
        tokens=outcome.train_tokens,
        labeled_tokens=outcome.labeled_tokens,
        squared_lengths=outcome.squared_lengths,
        adapter_params=adapter,
        full=full,
    )
    achieved = total / outcome.train_seconds if outcome.train_seconds > 0 else 0.0
    outcome.extra.update({"model_flops": total, "flops_per_second": round(achieved)})
    outcome.extra.update(
        cast(TrainExtras, flops.utilization_figures(achieved, peak_flops, outcome.precision))
    )


def fsdp_arguments(model: Any) -> dict[str, Any]:
    """TrainingArguments that shard ``model`` over the ranks with FSDP2 (torch's ``fully_shard``,
    accelerate's FSDP plugin): each decoder layer (the classes transformers will not split,
    ``_no_split_modules``) a unit of its own, its parameters all-gathered for its forward and
    backward and freed after; the gradients reduce-scattered, each rank updating its shard.

    Raises ValueError for a model that names no decoder layer class.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = list(getattr(base, "_no_split_modules", None) or [])
    if not layers:
        raise ValueError(
            f"training.parallelism: fsdp needs the model's decoder layer class to shard by, and "
            f"{type(base).__name__} names none (transformers' _no_split_modules is empty)"
        )
    return {
        "fsdp": "full_shard auto_wrap",
        "fsdp_config": {"version": 2, "transformer_layer_cls_to_wrap": layers},
    }


def gathered_state_dict(model: Any) -> dict[str, Any]:
    """The whole state dict of a model sharded with FSDP2, on rank 0 (on the CPU); empty on the
    other ranks. A collective: every rank must call it.

    torch's own gather (``get_model_state_dict`` with ``full_state_dict``), not
    ``Accelerator.get_state_dict``: on CPU ranks, with the plugin put back by
    :func:`_fsdp_on_cpu_trainer`, that one returned the ranks' DTensor shards (accelerate 1.15),
    which cannot be saved.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return dict(get_model_state_dict(model, options=options))


def _fsdp_on_cpu_trainer() -> Any:
    """transformers' Trainer, with its FSDP plugin also applied to ranks on CPUs.

    accelerate 1.15 keeps the plugin only for accelerator processes (``AcceleratorState`` sets
    ``DistributedType.FSDP`` for MULTI_GPU, MULTI_XPU, ... but not MULTI_CPU) and otherwise drops
    it without a word: the ranks then train whole models under DDP. torch's FSDP2 itself shards
    on CPUs over gloo, so after the Trainer makes its accelerator, this puts the plugin back on
    the shared accelerator state as accelerate would have (``prepare`` then shards the model
    with ``fully_shard``). Raises RuntimeError when the Trainer was given no FSDP arguments.
    """
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from transformers import Trainer

    class FsdpOnCpuTrainer(Trainer):
        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            if self.args.fsdp_plugin_args is None:
                raise RuntimeError("FsdpOnCpuTrainer without fsdp arguments (fsdp_arguments)")
            if getattr(state, "fsdp_plugin", None) is not None:  # accelerate kept it: a GPU rank
                return
            if state.distributed_type != DistributedType.MULTI_CPU:
                raise RuntimeError(
                    f"training.parallelism: fsdp: accelerate set up {state.distributed_type}, not FSDP, "
                    "and this is not a multi-process CPU run the plugin can be put back on"
                )
            plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            if state.mixed_precision != "no":
                plugin.set_mixed_precision(state.mixed_precision)
            state.fsdp_plugin = plugin
            state.distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    return FsdpOnCpuTrainer


def train(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    budget: TrainingBudget,
    method: MethodSpec,
    *,
    device: str,
    output_dir: Path,
    case_id: str = "case",
    outcome: TrainOutcome | None = None,
    trackers: Trackers | None = None,
    peak_flops: Mapping[str, float] | None = None,
    extra_callbacks: Sequence[Any] = (),
    full_state_dict: dict[str, Any] | None = None,
) -> TrainOutcome:
    """Train ``model`` (already made trainable by ``methods.apply_method``) on ``dataset``.

    ``dataset`` is a ``datasets.Dataset`` with ``input_ids``, ``labels`` and ``length`` (see
    ``prompting.tokenized_train_set``). Raises DivergenceError on a NaN/inf loss. ``outcome``,
    when given, is filled as training goes, so a caller still has the curve of a case that
    diverged or was interrupted. ``trackers`` (the case's open tracker runs) adds their
    integration callbacks: the loss curve goes to each tracker as it is logged. ``peak_flops``
    (the device's measured matmul peaks, :func:`peftcore.train.flops.training_peaks`) adds
    the run's model FLOPs and MFU to ``outcome.extra``. ``extra_callbacks`` are more TrainerCallbacks
    (a rank's progress heartbeat, peftcore.train.distributed).

    With ``training.parallelism: fsdp`` under torchrun, the Trainer shards the model over the
    ranks (:func:`fsdp_arguments`); every rank must then pass a ``full_state_dict`` to fill:
    after training it receives the whole trained state dict (gathered from the shards; on rank
    0, empty on the others), which the model's own ``state_dict()`` no longer is.
    """
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from peftcore.train import fast_dropout

    precision = resolve_precision(budget.precision, device)
    outcome = outcome if outcome is not None else TrainOutcome()
    outcome.precision = precision
    tokenizer.padding_side = "right"
    full_head = "training.lm_head: all" if budget.lm_head == "all" else lm_head_on_labeled_positions(model)
    collator = _CountingCollator(tokenizer, labeled_only=full_head is None)
    outcome.extra["lm_head"] = "labeled" if full_head is None else "all"
    if full_head is not None and budget.lm_head == "labeled":
        outcome.extra["lm_head_reason"] = full_head
    args = TrainingArguments(
        output_dir=str(output_dir),
        max_steps=budget.max_steps,
        per_device_train_batch_size=budget.batch_size,
        gradient_accumulation_steps=budget.gradient_accumulation_steps,
        learning_rate=budget.learning_rate,
        lr_scheduler_type=budget.lr_scheduler,
        warmup_steps=warmup_steps(budget),
        weight_decay=budget.weight_decay,
        max_grad_norm=budget.max_grad_norm,
        optim=budget.optimizer,
        seed=budget.seed,
        data_seed=budget.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        logging_strategy="steps",
        logging_steps=budget.logging_steps,
        logging_nan_inf_filter=False,  # a NaN must reach the divergence check, not be averaged away
        include_num_input_tokens_seen="non_padding",
        train_sampling_strategy="group_by_length",
        length_column_name="length",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=device != "cpu",
        save_strategy="no",
        eval_strategy="no",
        # The tracker callbacks are added below, attached to runs opened with the case's spec.
        report_to="none",
        disable_tqdm=True,
        **(trackers.training_arguments() if trackers is not None else {}),
        **(fsdp_arguments(model) if budget.parallelism == "fsdp" else {}),
    )
    # Recorded next to the spec's batch_size, which a train split smaller than it caps (under
    # torchrun every process is given the whole split and trains on its share of it).
    outcome.extra["effective_batch_size"] = effective_batch_size(
        budget.batch_size, len(dataset), budget.processes
    )
    callbacks = [*_callbacks(outcome, method, case_id, budget.max_steps), *extra_callbacks]
    live = None
    if budget.live_memory_steps > 0:
        from peftcore.train.live_memory import live_memory_callback

        live = live_memory_callback(model, budget.live_memory_steps, outcome.extra)
        callbacks.append(live)
    if trackers is not None:
        callbacks.extend(trackers.callbacks())
    trainer_class = _fsdp_on_cpu_trainer() if budget.parallelism == "fsdp" else Trainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict: floods captured output
    # FSDP flattens and shards the parameters: their fingerprint before is not comparable after.
    before = None if budget.parallelism == "fsdp" else trainable_fingerprint(model)
    start = time.perf_counter()
    try:
        with fast_dropout.installed(model, device, enabled=budget.fast_dropout) as swapped:
            outcome.extra["fast_dropout_modules"] = swapped
            trainer.train()
        if full_state_dict is not None:
            full_state_dict.update(gathered_state_dict(model))
    finally:
        # accelerate wraps the model's forward in its mixed-precision autocast for training and
        # leaves the wrapper on: scoring would then run in the training precision (bf16), not in
        # ``eval.precision``. Unwrapping restores the model's own forward.
        trainer.accelerator.unwrap_model(model, keep_fp32_wrapper=False)
        if live is not None:
            live.close(int(trainer.state.global_step))
        outcome.train_seconds = time.perf_counter() - start
        outcome.steps = int(trainer.state.global_step)
        outcome.train_tokens = int(trainer.state.num_input_tokens_seen)
        outcome.padded_tokens = collator.positions
        outcome.lm_head_positions = collator.lm_head_positions
        outcome.labeled_tokens = collator.labeled_tokens
        outcome.squared_lengths = collator.squared_lengths
    if before is not None and before == trainable_fingerprint(model):
        raise UnchangedWeightsError(outcome.steps, len(before))
    if peak_flops:
        utilization(model, method, outcome, peak_flops)
    if method.tuner == "adalora":
        config = model.peft_config[model.active_adapter]
        pattern = config.rank_pattern or {}
        outcome.extra["adalora_final_rank_total"] = int(
            sum(sum(bool(x) for x in m) for m in pattern.values())
        )
        outcome.extra["adalora_initial_rank_total"] = int(config.init_r * len(pattern)) if pattern else None
    return outcome
