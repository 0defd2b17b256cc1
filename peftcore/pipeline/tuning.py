"""A method's search run as cases: the Optuna study in the run folder, each trial's values asked
of it and its objective told, and the choice a tuned case trains with.

One study per (method, model, task), ``<run>/tune/<method>-<model>-<task>.journal``: Optuna's
journal file storage (each change an appended line under a file lock, so an interrupted
session's study is read back whole, and several sessions of one run may share it). A trial's
values come from the study: a grid point is enqueued and asked, a TPE trial is the sampler's
draw (seeded, so a rerun draws the same values after the same objectives). A trial that finished
in an earlier session of the run is answered from the study, so its case (and its content hash)
is the same again and its record is resumed, not retrained.

The choice reads the trials' records (their objective on the tuning split and its standard
error), never held_out: ``best`` takes the best objective; ``one_se`` the largest learning rate
whose objective is within one standard error of the best (the steadier choice among ties).

With ``tune.pruner``, the study is opened with Optuna's pruner (:func:`make_pruner`); a trial
reports its tuning-split loss as it trains (:mod:`peftcore.pipeline.pruning`) and one the
pruner stops is told ``PRUNED``: its record is ``finished`` with ``tuning.pruning.pruned_at_step``
set and no objective, so it is never chosen, and it is resumed like a finished trial.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from peftcore.errors import PeftcoreError
from peftcore.results.store import read_record, record_path
from peftcore.spec.cases import Case, Tuning
from peftcore.spec.tuning import LOSS, REDUCTION_FACTOR, key_kind, prune_after, search_grid
from peftcore.spec.types import TuneSettings
from peftcore.vocab.quantities import higher_is_better
from peftcore.vocab.record import Record, RecordError, pruned_at_step, pruning_block

STUDY_FOLDER = "tune"
LEARNING_RATE = "training.learning_rate"


class TuneError(PeftcoreError):
    """A search cannot go on (a tuned case whose trials did not finish, a study that cannot be read)."""


def direction(search: TuneSettings) -> Literal["minimize", "maximize"]:
    """``minimize`` or ``maximize``: the objective's, or its metric's own direction."""
    if search.objective.direction != "auto":
        return search.objective.direction
    metric = search.objective.metric
    # A metric of unknown direction needs an explicit one (peftcore.spec.tuning.check_objective).
    return "minimize" if metric == LOSS or higher_is_better(metric) is False else "maximize"


def trial_count(case: Case) -> int:
    """How many trials the case's study has: the grid's points, or ``trials`` for TPE."""
    assert case.tuning is not None
    search = case.tuning.search
    if search.sampler == "grid":
        return math.prod(len(values) for values in search_grid(search, case.method.tuner).values())
    return search.trials


def _distributions(case: Case) -> dict[str, Any]:
    """Optuna's distribution of each searched key: a grid's values as a categorical choice, a
    TPE range as a float (or int) range on its scale, listed values as a categorical choice."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    assert case.tuning is not None
    search = case.tuning.search
    if search.sampler == "grid":
        return {k: CategoricalDistribution(v) for k, v in search_grid(search, case.method.tuner).items()}
    out: dict[str, Any] = {}
    for name, space in search.search.items():
        if space.values:
            out[name] = CategoricalDistribution(list(space.values))
        elif key_kind(name, case.method.tuner) is int:
            out[name] = IntDistribution(int(space.low or 0), int(space.high or 0), log=space.log)
        else:
            out[name] = FloatDistribution(float(space.low or 0), float(space.high or 0), log=space.log)
    return out


def make_pruner(search: TuneSettings, steps: int) -> Any:
    """Optuna's pruner for a search whose trials train ``steps`` optimizer steps and report their
    loss at ``prune_after * 3**k`` steps (:func:`peftcore.spec.tuning.look_steps`).

    - ``successive_halving``: ``SuccessiveHalvingPruner(min_resource=prune_after,
      reduction_factor=3, min_early_stopping_rate=0)``: rungs at ``prune_after * 3**k`` steps; a
      trial that reaches a rung goes on only if its loss there is in the best third of the
      trials' losses at that rung (the best so far while fewer than three have reached it).
    - ``hyperband``: ``HyperbandPruner(min_resource=prune_after, max_resource=steps,
      reduction_factor=3)``: ``floor(log3(steps / prune_after)) + 1`` successive-halving
      brackets (bracket ``b``'s rungs at ``prune_after * 3**(b + k)``), each trial in one (by a
      hash of the study and the trial's number), compared only with its bracket's trials.
    - ``none``: Optuna's ``NopPruner``.
    """
    import optuna

    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    first = prune_after(search, steps)
    if search.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0
        )
    return optuna.pruners.HyperbandPruner(
        min_resource=first, max_resource=steps, reduction_factor=REDUCTION_FACTOR
    )


def open_study(run_dir: Path, case: Case) -> Any:
    """The case's study in the run folder, created at its first trial, with the search's sampler
    and pruner (a trial case's steps are its ``max_steps``: ``tune.steps`` or the case's own).

    TPE's sampler is seeded with the case's seed plus the trials the study holds: a sampler is
    made anew for each trial (sessions come and go), and one seed for all would draw the same
    random start every time; this way a rerun after the same trials draws the same values.
    """
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    assert case.tuning is not None
    search = case.tuning.search
    path = run_dir / STUDY_FOLDER / f"{case.tuning.study}.journal"
    path.parent.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=case.tuning.study,
        storage=JournalStorage(JournalFileBackend(str(path))),
        sampler=optuna.samplers.GridSampler(search_grid(search, case.method.tuner), seed=0)
        if search.sampler == "grid"
        else None,
        pruner=make_pruner(search, case.training.max_steps),
        direction=direction(search),
        load_if_exists=True,
    )
    if search.sampler == "tpe":
        # A third of the trials (2 to 10) drawn at random before TPE models the rest.
        study.sampler = optuna.samplers.TPESampler(
            seed=case.training.seed + len(study.get_trials(deepcopy=False)),
            n_startup_trials=min(10, max(2, search.trials // 3)),
        )
    return study


def begin_trial(run_dir: Path, case: Case) -> tuple[Case, int]:
    """The trial case with its values from the study, and its trial number there.

    A trial of this case left running by an interrupted session is failed first; one that
    finished (or was pruned) before gives its values again (its record is then resumed or
    adopted, never trained again).
    """
    from optuna.trial import TrialState

    study = open_study(run_dir, case)
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("case_id") == case.case_id]
    for stale in (t for t in mine if t.state == TrialState.RUNNING):
        study.tell(stale.number, state=TrialState.FAIL)
    done = [t for t in mine if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    if done:
        return case.with_values(done[-1].params), done[-1].number
    assert case.tuning is not None
    if case.tuning.values:  # a grid point: asked as it is
        study.enqueue_trial(dict(case.tuning.values))
    trial = study.ask(_distributions(case))
    trial.set_user_attr("case_id", case.case_id)
    return case.with_values(trial.params), trial.number


def end_trial(run_dir: Path, case: Case, number: int, record: Record) -> None:
    """Tell the study the trial's objective (a trial the pruner stopped: pruned; one that did
    not finish: failed).

    A record with looks at its loss that the study's trial lacks (adopted from another run) has
    them reported first, so the pruner compares later trials with them too."""
    from optuna.trial import TrialState

    assert case.tuning is not None
    study = open_study(run_dir, case)
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != TrialState.RUNNING:
        return  # told in an earlier session
    if record.get("status") == "finished" and not trial.intermediate_values:
        _replay_looks(study, trial, record, case.tuning.search)
    if record.get("status") == "finished" and pruned_at_step(record) is not None:
        study.tell(number, state=TrialState.PRUNED)
        return
    value = objective_value(record, case.tuning.search)
    if value is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, value)


def intermediate_sign(search: TuneSettings) -> float:
    """What a trial's loss is multiplied by before Optuna's pruner sees it: 1, or -1 in a study
    that maximizes its objective (the pruner ranks intermediate values in the study's direction,
    and a lower loss is better whatever the objective)."""
    return 1.0 if direction(search) == "minimize" else -1.0


def _replay_looks(study: Any, frozen: Any, record: Mapping[str, Any], search: TuneSettings) -> None:
    from optuna.trial import Trial

    looks = looks_at_loss(record)
    if not looks:
        return
    trial = Trial(study, frozen._trial_id)
    for step, loss in looks:
        trial.report(intermediate_sign(search) * loss, step)  # NaN stays NaN: pruned
        trial.should_prune()  # the pruner keeps each rung's value as it judges it


def looks_at_loss(record: Mapping[str, Any]) -> list[tuple[int, float]]:
    """A pruned search's trial's intermediate tuning-split losses, as ``(step, loss)`` (NaN where
    the record has null: a loss that was not finite)."""
    return [
        (int(step), math.nan if loss is None else float(loss))
        for step, loss in pruning_block(record).get("intermediate") or ()
    ]


def objective_value(record: Mapping[str, Any], search: TuneSettings) -> float | None:
    """The trial's objective on the tuning split; None unless it finished with a finite one (a
    trial the pruner stopped has none: it is never chosen)."""
    if record.get("status") != "finished" or pruned_at_step(record) is not None:
        return None
    return _scored(record, search)


def _scored(record: Mapping[str, Any], search: TuneSettings) -> float | None:
    value = ((record.get("metrics") or {}).get("tune") or {}).get(search.objective.metric)
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def _stderr(record: Mapping[str, Any], metric: str) -> float | None:
    block = ((record.get("uncertainty") or {}).get("tune") or {}).get(metric) or {}
    value = block.get("stderr")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


@dataclass(frozen=True)
class _TrialRow:
    """One trial as a tuned case's choice reads it."""

    case_id: str
    status: str  # the record's, or missing
    values: dict[str, Any]
    value: float | None  # its objective; None unless it finished with a finite one
    stderr: float | None
    pruned_at_step: int | None = None  # the step the pruner stopped it at (then value is None)


def _trial_row(run_dir: Path, case_id: str, records: Mapping[str, Record], search: TuneSettings) -> _TrialRow:
    record = records.get(case_id) or _read(run_dir, case_id)
    if record is None:
        return _TrialRow(case_id, "missing", {}, None, None)
    values = dict((record.get("tuning") or {}).get("values") or {})
    value = objective_value(record, search)
    stderr = _stderr(record, search.objective.metric)
    return _TrialRow(case_id, str(record["status"]), values, value, stderr, pruned_at_step(record))


def choose(run_dir: Path, case: Case, records: Mapping[str, Record]) -> Case:
    """The tuned case with its searched keys at the values its trials chose.

    Reads each trial's record from this session (``records``) or the run folder. ``TuneError``
    when none finished: the tuned case cannot run before its trials (with ``-k``, select them
    too).
    """
    tuning = case.tuning
    assert tuning is not None and tuning.kind == "tuned"
    search = tuning.search
    metric, way = search.objective.metric, direction(search)
    rows = [_trial_row(run_dir, case.trial_id(i), records, search) for i in range(trial_count(case))]
    done = [(row, row.value) for row in rows if row.value is not None]
    if not done:
        states = ", ".join(
            f"{row.case_id} {row.status if row.pruned_at_step is None else 'pruned'}" for row in rows
        )
        raise TuneError(
            f"{case.case_id}: none of its {len(rows)} trials has a {metric} on the tuning split ({states}); "
            "run its trials first (select them with -k too)"
        )
    sign = 1.0 if way == "maximize" else -1.0
    best, best_value = max(done, key=lambda pair: sign * pair[1])
    chosen, why = best, f"the best {metric} on the tuning split ({way})"
    if search.choose == "one_se":
        margin = best.stderr or 0.0
        close = [row for row, value in done if sign * (best_value - value) <= margin]
        chosen = max(close, key=lambda row: float(row.values.get(LEARNING_RATE, 0.0)))
        why = (
            f"the largest learning rate whose {metric} is within one standard error "
            f"({margin:.4g}) of the best ({best_value:.4g}, {best.case_id})"
        )
    choice = {
        "objective": {"metric": metric, "direction": way},
        "trials": [dataclasses.asdict(row) for row in rows],
        "finished": len(done),
        "pruned": sum(row.pruned_at_step is not None for row in rows),
        "chosen": chosen.values,
        "chosen_trial": chosen.case_id,
        "why": why,
    }
    return case.with_values(chosen.values, choice=choice)


def _read(run_dir: Path, case_id: str) -> Record | None:
    try:
        return read_record(record_path(run_dir, case_id))
    except (OSError, RecordError):
        return None


def record_block(
    case: Case, record: Mapping[str, Any], pruning: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What a record says of its case's part in the search (``record["tuning"]``); a pruned
    search's trial adds its looks at its loss (``pruning``: :meth:`peftcore.pipeline.pruning.Looks.block`)."""
    tuning: Tuning | None = case.tuning
    assert tuning is not None
    block: dict[str, Any] = {
        "kind": tuning.kind,
        "study": tuning.study,
        "values": dict(tuning.values),
        "defaults": dict(tuning.defaults),
    }
    if tuning.kind == "trial":
        metric = tuning.search.objective.metric
        block.update(
            index=tuning.index,
            objective={
                "metric": metric,
                "direction": direction(tuning.search),
                "value": _scored(record, tuning.search),
                "stderr": _stderr(record, metric),
            },
        )
        if pruning is not None:
            block["pruning"] = dict(pruning)
    elif tuning.kind == "tuned":
        block.update(dict(tuning.choice))
    return block
