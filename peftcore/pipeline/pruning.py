"""A search's trial stopped as it trains when Optuna's pruner finds it hopeless (``tune.pruner``).

At the pruners' rungs (``prune_after * 3**k`` optimizer steps, before its last:
:func:`peftcore.spec.tuning.look_steps`), the trial's model is scored on the tuning split: the
mean answer loss (the objective ``loss``; the loss whatever the objective metric,
since every task has it and it is cheap to score). The loss goes to the trial's Optuna trial in
the study's journal (``trial.report(loss, step)``, negated in a study that maximizes its
objective: :func:`peftcore.pipeline.tuning.intermediate_sign`), and when ``trial.should_prune()``
says so the Trainer is told to stop after that step. The trial's record keeps every look and the
step it was stopped at (:meth:`Looks.block`); the session then tells the study ``PRUNED``
(:func:`peftcore.pipeline.tuning.end_trial`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftcore.data.example import TaskData
from peftcore.pipeline.tuning import TuneError, intermediate_sign, open_study
from peftcore.spec.cases import Case
from peftcore.spec.tuning import look_steps, prune_after
from peftcore.train.prompting import PromptFormat


def pruned_search_trial(case: Case) -> bool:
    """A trial of a search with a pruner: it looks at its loss as it trains."""
    return case.tuning is not None and case.tuning.kind == "trial" and case.tuning.search.pruner != "none"


@dataclass
class Looks:
    """A trial's looks at its tuning-split loss as it trains, filled by its callback."""

    pruner: str
    after: int  # the first look's step (the pruners' min_resource)
    at: tuple[int, ...]  # the steps it looks at: the pruners' rungs below its last step
    steps: int  # the steps the trial would train unpruned
    intermediate: list[tuple[int, float]] = field(default_factory=list)  # (step, mean answer loss)
    pruned_at_step: int | None = None
    seconds: float = 0.0  # spent scoring the looks (inside the trial's training time)

    @classmethod
    def of(cls, case: Case) -> Looks:
        assert case.tuning is not None
        search, steps = case.tuning.search, case.training.max_steps
        return cls(search.pruner, prune_after(search, steps), look_steps(search, steps), steps)

    def block(self) -> dict[str, Any]:
        """The record's ``tuning.pruning``."""
        return {
            "pruner": self.pruner,
            "after": self.after,
            "at": list(self.at),
            "steps": self.steps,
            # A loss that is not finite (a diverging trial) is written null: records are strict JSON.
            "intermediate": [
                [step, loss if math.isfinite(loss) else None] for step, loss in self.intermediate
            ],
            "pruned_at_step": self.pruned_at_step,
            "seconds": round(self.seconds, 3),
        }


def pruning_callback(
    run_dir: Path,
    case: Case,
    data: TaskData,
    fmt: PromptFormat,
    *,
    device: str,
    precision: str,
    model: Callable[[], Any],
    looks: Looks,
) -> Any:
    """A TrainerCallback that looks at the trial's loss at ``looks.at`` steps, reports it
    to the case's running Optuna trial and stops training when the pruner says so. ``model``
    gives the model being trained. TuneError when the study holds no running trial of the case
    (it is asked by :func:`peftcore.pipeline.tuning.begin_trial` before the case runs)."""
    from optuna.trial import Trial, TrialState
    from transformers import TrainerCallback

    from peftcore.score import score_answer_losses

    assert case.tuning is not None
    study = open_study(run_dir, case)
    running = [
        t
        for t in study.get_trials(deepcopy=False)
        if t.user_attrs.get("case_id") == case.case_id and t.state == TrialState.RUNNING
    ]
    if not running:
        raise TuneError(f"{case.case_id}: its study {case.tuning.study} has no running trial to report to")
    trial = Trial(study, running[-1]._trial_id)
    sign = intermediate_sign(case.tuning.search)
    examples = data.split("tune")

    class PruneHopeless(TrainerCallback):
        """Looks at the tuning-split loss; stops the Trainer when the pruner finds it hopeless."""

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            step = int(state.global_step)
            if step not in looks.at:
                return  # no rung here (the last step's loss is the trial's objective, scored after)
            start = time.perf_counter()
            losses = score_answer_losses(
                model(), fmt, examples, case.eval, device=device, precision=precision
            )
            loss = sum(losses) / len(losses)
            looks.intermediate.append((step, loss))
            trial.report(sign * loss if math.isfinite(loss) else math.nan, step)
            if trial.should_prune():
                looks.pruned_at_step = step
                control.should_training_stop = True
            looks.seconds += time.perf_counter() - start

    return PruneHopeless()
