"""What training a case gave: :class:`TrainOutcome`, defined once, with its conversions.

The same outcome comes from a case trained in the session's process
(:func:`peftcore.train.trainer.train`) and from one trained over several processes (each rank
trains with the same function; rank 0 gathers the ranks' outcomes, :meth:`TrainOutcome.over_ranks`,
and writes the run's as JSON, :meth:`TrainOutcome.to_dict`, which the session reads back,
:meth:`TrainOutcome.from_dict`). The record's training figures are made from it in one place,
:meth:`TrainOutcome.figures` (a case that stopped: :meth:`TrainOutcome.partial_figures`), so a new
field is added here, to the dataclass and its conversion, and to the record's
:class:`peftcore.vocab.record.TrainingFigures`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, cast

from peftcore.vocab.record import TrainingFigures

# How a field of the run's outcome is made from the ranks' (``field(metadata=...)``): their sum or
# their largest. A field without it is rank 0's (the real-token count is already every rank's: the
# Trainer gathers ``num_input_tokens_seen``; the loss it logs is the mean over the ranks).
_OVER_RANKS = "over_ranks"


class TrainExtras(TypedDict, total=False):
    """The figures only some runs have (a tuner, a lever, a measurement asked for), filled as
    training goes. Every key is a :class:`~peftcore.vocab.record.TrainingFigures` key of the same
    type (the type checker holds :meth:`TrainOutcome.figures` to that)."""

    lm_head: str  # labeled | all (training.lm_head as it applied)
    lm_head_reason: str  # why a labeled-only head was not possible
    effective_batch_size: int
    fast_dropout_modules: int
    # peftcore.train.live_memory (training.live_memory_steps)
    live_peak_bytes: int
    live_peak_by_kind: dict[str, int]
    live_tracked_steps: int
    # peftcore.train.flops (the device's measured matmul peak given)
    model_flops: int
    flops_per_second: int
    peak_flops_per_second: int  # the best peak of any training precision
    peak_precision: str  # the precision that reaches it
    precision_peak_flops_per_second: int  # the run's own precision's peak
    mfu: float  # against the best peak
    mfu_unavailable: str
    # AdaLoRA only
    adalora_updates: int
    adalora_final_rank_total: int
    adalora_initial_rank_total: int | None
    parameters_held_per_rank: list[int]  # FSDP over several processes: each rank's shards


@dataclass
class TrainOutcome:
    """What a training run measured. Filled as training goes, so a caller that passed one in
    still has the loss curve of a run that diverged or was interrupted."""

    steps: int = 0
    train_seconds: float = field(default=0.0, metadata={_OVER_RANKS: max})  # the slowest rank's
    train_tokens: int = 0  # real tokens (no padding) the model trained on
    padded_tokens: int = field(default=0, metadata={_OVER_RANKS: sum})  # all positions, padding included
    lm_head_positions: int = field(default=0, metadata={_OVER_RANKS: sum})  # positions the LM head computed
    labeled_tokens: int = field(default=0, metadata={_OVER_RANKS: sum})  # tokens the loss is on
    # sum over sequences of their real length squared
    squared_lengths: int = field(default=0, metadata={_OVER_RANKS: sum})
    loss_curve: list[tuple[int, float]] = field(default_factory=list)
    precision: str = "fp32"
    extra: TrainExtras = field(default_factory=lambda: TrainExtras())

    @property
    def tokens_per_second(self) -> float:
        return self.train_tokens / self.train_seconds if self.train_seconds > 0 else 0.0

    @property
    def final_loss(self) -> float | None:
        return self.loss_curve[-1][1] if self.loss_curve else None

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.train_tokens / self.padded_tokens if self.padded_tokens else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able data (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainOutcome:
        """The outcome :meth:`to_dict` gave (through JSON: the loss curve's points come back as
        lists). Raises KeyError for a field it lacks."""
        found = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        found["loss_curve"] = [(int(s), float(v)) for s, v in found["loss_curve"]]
        found["extra"] = cast(TrainExtras, dict(found["extra"]))
        return cls(**found)

    def over_ranks(self, ranks: Sequence[TrainOutcome]) -> TrainOutcome:
        """This outcome (rank 0's) made the run's over every rank's ``ranks`` (rank 0's
        included): each field marked with how it combines over the ranks is combined, every
        other is this one's."""
        combined = {
            f.name: f.metadata[_OVER_RANKS](getattr(r, f.name) for r in ranks)
            for f in dataclasses.fields(self)
            if _OVER_RANKS in f.metadata
        }
        return dataclasses.replace(self, **combined, extra=TrainExtras(**self.extra))

    def figures(self, *, adapter_bytes: int, truncation: dict[str, int] | None) -> TrainingFigures:
        """The record's training figures of a finished run, with the size of the weights it saved
        and what ``training.max_length`` cut from its examples (None: nothing measured)."""
        figures: TrainingFigures = {
            "steps": self.steps,
            "train_seconds": round(self.train_seconds, 3),
            "train_tokens": self.train_tokens,
            "padded_tokens": self.padded_tokens,
            "padding_fraction": round(self.padding_fraction, 4),
            "labeled_tokens": self.labeled_tokens,
            "lm_head_positions": self.lm_head_positions,
            "tokens_per_second": round(self.tokens_per_second, 2),
            "precision": self.precision,
            "final_loss": self.final_loss,
            "loss_curve": [[s, v] for s, v in self.loss_curve],
            "adapter_bytes": adapter_bytes,
        }
        if truncation is not None:
            figures["truncation"] = truncation
        return {**figures, **self.extra}

    def partial_figures(self) -> TrainingFigures:
        """The record's training figures of a run that stopped (an error, an interrupt): the loss
        curve so far, the steps taken, and the time and tokens once training ended."""
        # Optimizer steps taken (train() sets them even when training stops on an error); the
        # last logged step when that bookkeeping did not happen.
        logged = self.loss_curve[-1][0] if self.loss_curve else 0
        figures: TrainingFigures = {
            "loss_curve": [[s, v] for s, v in self.loss_curve],
            "steps": max(int(self.steps), int(logged)),
        }
        if self.train_seconds:  # training ended (a failure after it keeps its cost)
            figures["train_seconds"] = round(self.train_seconds, 3)
            figures["train_tokens"] = self.train_tokens
        return figures
