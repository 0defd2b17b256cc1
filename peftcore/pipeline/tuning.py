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
from peftcore.spec.tuning import LOSS, key_kind, search_grid
from peftcore.spec.types import TuneSettings
from peftcore.vocab.quantities import higher_is_better
from peftcore.vocab.record import Record, RecordError

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


def open_study(run_dir: Path, case: Case) -> Any:
    """The case's study in the run folder, created at its first trial, with the search's sampler.

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
    finished before gives its values again (its record is then resumed or adopted).
    """
    from optuna.trial import TrialState

    study = open_study(run_dir, case)
    mine = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("case_id") == case.case_id]
    for stale in (t for t in mine if t.state == TrialState.RUNNING):
        study.tell(stale.number, state=TrialState.FAIL)
    done = [t for t in mine if t.state == TrialState.COMPLETE]
    if done:
        return case.with_values(done[-1].params), done[-1].number
    assert case.tuning is not None
    if case.tuning.values:  # a grid point: asked as it is
        study.enqueue_trial(dict(case.tuning.values))
    trial = study.ask(_distributions(case))
    trial.set_user_attr("case_id", case.case_id)
    return case.with_values(trial.params), trial.number


def end_trial(run_dir: Path, case: Case, number: int, record: Record) -> None:
    """Tell the study the trial's objective (a trial that did not finish: failed)."""
    from optuna.trial import TrialState

    assert case.tuning is not None
    study = open_study(run_dir, case)
    trial = study.get_trials(deepcopy=False)[number]
    if trial.state != TrialState.RUNNING:
        return  # told in an earlier session
    value = objective_value(record, case.tuning.search)
    if value is None:
        study.tell(number, state=TrialState.FAIL)
    else:
        study.tell(number, value)


def objective_value(record: Mapping[str, Any], search: TuneSettings) -> float | None:
    """The trial's objective on the tuning split; None unless it finished with a finite one."""
    return _scored(record, search) if record.get("status") == "finished" else None


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


def _trial_row(run_dir: Path, case_id: str, records: Mapping[str, Record], search: TuneSettings) -> _TrialRow:
    record = records.get(case_id) or _read(run_dir, case_id)
    if record is None:
        return _TrialRow(case_id, "missing", {}, None, None)
    values = dict((record.get("tuning") or {}).get("values") or {})
    value = objective_value(record, search)
    return _TrialRow(case_id, str(record["status"]), values, value, _stderr(record, search.objective.metric))


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
        states = ", ".join(f"{row.case_id} {row.status}" for row in rows)
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


def record_block(case: Case, record: Mapping[str, Any]) -> dict[str, Any]:
    """What a record says of its case's part in the search (``record["tuning"]``)."""
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
    elif tuning.kind == "tuned":
        block.update(dict(tuning.choice))
    return block
