"""A search's hopeless trials stopped on their tuning-split loss (``tune.pruner``): Optuna's
pruner decides, the trial's record says so, the choice ignores it and a rerun does not train it
again. Pytest sessions of the tiny Llama (marked slow); the checks without a model are not."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import read_cases

from peftcore.errors import SpecError
from peftcore.pipeline.tuning import choose, make_pruner, objective_value, pruned_at_step
from peftcore.spec import SpecStore, expand
from peftcore.spec.tuning import look_steps
from peftcore.spec.types import TuneSettings

# Three learning rates in the grid's order: a good one, an absurd one (the tiny Llama's loss on
# the tuning split goes up, not down), a faster one. Successive halving with prune_after 2 has
# rungs at steps 2 and 6 of 8, where the trials look: the absurd trial is the worst at step 2
# and is stopped there; the third's loss is below the first's at both rungs, so it runs on.
RATES = (3.0e-3, 30.0, 1.0e-2)
PROFILE = """\
description: a pruned learning-rate search on the tiny Llama
methods: [lora]
models: [tiny]
tasks: [sst2]
data: {{train: 8, held_out: 6, seen: 2, tune: 6}}
training: {{max_steps: 2, batch_size: 2, max_length: 64}}
eval: {{batch_size: 6}}
tune:
  search: {{training.learning_rate: {{values: [{rates}]}}}}
  steps: 8
  pruner: {pruner}
  prune_after: 2
"""


def _profile(pruner: str = "successive_halving") -> str:
    return PROFILE.format(rates=", ".join(f"{r:g}" for r in RATES), pruner=pruner)


def _study(journal: Path) -> Any:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(
        study_name=journal.stem, storage=JournalStorage(JournalFileBackend(str(journal)))
    )


@pytest.mark.slow
def test_a_hopeless_trial_is_pruned_before_its_last_step_never_chosen_never_retrained(
    tiny_project: pytest.Pytester,
) -> None:
    (tiny_project.path / "specs" / "profiles" / "search.yaml").write_text(_profile())
    common = ("-p", "no:cacheprovider", "--profile", "search", "--benchmark-disable", "--run-id", "p1")
    result = tiny_project.runpytest_subprocess(*common, "--results-dir", "runs")
    result.assert_outcomes(passed=4)  # three trials (one pruned: not a failure) and the tuned run
    records = read_cases(tiny_project.path / "runs" / "p1")
    good, absurd, better = (records[f"lora-tiny-sst2-trial{i}"] for i in range(3))

    # The absurd rate: stopped at the first rung (step 2 of 8), not scored, no objective.
    assert absurd["tuning"]["values"] == {"training.learning_rate": RATES[1]}
    assert absurd["status"] == "finished" and pruned_at_step(absurd) == 2
    pruning = absurd["tuning"]["pruning"]
    assert pruning["pruner"] == "successive_halving" and pruning["after"] == 2 and pruning["steps"] == 8
    assert pruning["at"] == [2, 6]
    assert absurd["training"]["steps"] == 2
    assert [step for step, _ in pruning["intermediate"]] == [2]
    assert absurd["metrics"] == {} and absurd["tuning"]["objective"]["value"] is None
    # ... because at step 2 its loss was worse than the first trial's there.
    assert pruning["intermediate"][0][1] > good["tuning"]["pruning"]["intermediate"][0][1]

    # The good ones: a look at each rung before the last step, trained to the end, scored.
    for trial in (good, better):
        assert pruned_at_step(trial) is None and trial["training"]["steps"] == 8
        assert [step for step, _ in trial["tuning"]["pruning"]["intermediate"]] == [2, 6]
        assert math.isfinite(trial["tuning"]["objective"]["value"])
        assert trial["tuning"]["objective"]["value"] == trial["metrics"]["tune"]["loss"]

    # The tuned run chose among the finished trials only.
    tuned = records["lora-tiny-sst2-tuned"]["tuning"]
    assert tuned["chosen_trial"] != absurd["case_id"]
    assert tuned["finished"] == 2 and tuned["pruned"] == 1
    assert [row["pruned_at_step"] for row in tuned["trials"]] == [None, 2, None]
    saved = 3 * 8 - sum(t["training"]["steps"] for t in (good, absurd, better))
    print(f"steps trained: {24 - saved} of 24 ({saved} saved)")

    # The report counts it, and load_results' trial rows say where it stopped.
    summary = (tiny_project.path / "p1" / "summary.md").read_text()
    assert "| 3 (1 pruned) |" in summary
    from peftcore import load_results

    frame = load_results(tiny_project.path / "runs" / "p1", trials=True).set_index("case_id")
    assert frame.loc[absurd["case_id"], "tuning.pruned_at_step"] == 2
    assert frame.loc[[good["case_id"], better["case_id"]], "tuning.pruned_at_step"].isna().all()

    # The study: told PRUNED, with the looks the record keeps; the others COMPLETE.
    journal = tiny_project.path / "runs" / "p1" / "tune" / "lora-tiny-sst2.journal"
    study = _study(journal)
    states = {t.user_attrs["case_id"]: t.state.name for t in study.trials}
    assert states == {
        good["case_id"]: "COMPLETE",
        absurd["case_id"]: "PRUNED",
        better["case_id"]: "COMPLETE",
    }
    pruned = next(t for t in study.trials if t.state.name == "PRUNED")
    assert pruned.intermediate_values == dict(map(tuple, pruning["intermediate"]))

    # The same command again: every case resumed, the pruned trial not trained again.
    again = tiny_project.runpytest_subprocess(*common, "--results-dir", "runs")
    again.assert_outcomes(skipped=4)
    assert read_cases(tiny_project.path / "runs" / "p1") == records
    assert len(_study(journal).trials) == 3


# --------------------------------------------------------------------------- without a model


def _trial(index: int, rate: float, loss: float, pruned: int | None = None) -> dict[str, Any]:
    return {
        "case_id": f"lora-smollm2-135m-sst2-trial{index}",
        "status": "finished",
        "metrics": {"tune": {"loss": loss}},
        "uncertainty": {"tune": {"loss": {"stderr": 0.01}}},
        "tuning": {
            "kind": "trial",
            "index": index,
            "values": {"training.learning_rate": rate},
            "pruning": {"pruner": "successive_halving", "after": 2, "steps": 8, "pruned_at_step": pruned},
        },
    }


def test_a_pruned_trial_is_never_chosen_even_with_the_best_loss(specs: Path, tmp_path: Path) -> None:
    (specs / "profiles" / "search.yaml").write_text(
        _profile().replace("models: [tiny]", "models: [smollm2-135m]")
    )
    case = next(c for c in expand(SpecStore(specs), "search") if c.case_id.endswith("-tuned"))
    # Its loss here is the best, as if it had been scored: a pruned trial's is never read.
    trials = [_trial(0, 3e-3, 2.0), _trial(1, 30.0, 0.5, pruned=2), _trial(2, 1e-2, 1.5)]
    assert [objective_value(t, case.tuning.search) for t in trials] == [2.0, None, 1.5]
    tuned = choose(tmp_path, case, {t["case_id"]: t for t in trials})
    assert tuned.tuning.choice["chosen_trial"] == "lora-smollm2-135m-sst2-trial2"
    assert tuned.tuning.choice["pruned"] == 1 and tuned.tuning.choice["finished"] == 2


@pytest.mark.parametrize(
    ("pruner", "kind"),
    [
        ("successive_halving", "SuccessiveHalvingPruner"),
        ("hyperband", "HyperbandPruner"),
        ("none", "NopPruner"),
    ],
)
def test_the_pruner_is_optunas_own_its_first_rung_at_prune_after(pruner: str, kind: str) -> None:
    """A study in memory: at the first rung (step 2) the worse of two trials is stopped, the
    better goes on (successive halving; hyperband with these steps has one bracket)."""
    import optuna

    search = TuneSettings(pruner=pruner, prune_after=2)
    made = make_pruner(search, 4)  # hyperband: floor(log3(4 / 2)) + 1 = 1 bracket
    assert type(made).__name__ == kind
    study = optuna.create_study(pruner=made, direction="minimize")
    decisions = []
    for loss in (1.0, 3.0, 0.5):
        trial = study.ask()
        trial.report(loss, 1)  # before the first rung: never stopped
        assert not trial.should_prune()
        trial.report(loss, 2)
        decisions.append(trial.should_prune())
        if decisions[-1]:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            study.tell(trial, loss)
    assert decisions == ([False, True, False] if pruner != "none" else [False, False, False])


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_looking_only_at_the_rungs_prunes_as_looking_at_every_step(pruner: str) -> None:
    """A trial looks at its loss only at the pruners' rungs (each look scores the tuning split):
    Optuna's pruners decide the same as when it looks after every step. Twelve trials of 30
    steps with random loss curves, in two studies of the same name (hyperband's brackets hash it)."""
    import random

    import optuna

    search = TuneSettings(pruner=pruner, prune_after=1)
    assert look_steps(search, 30) == (1, 3, 9, 27)
    rng = random.Random(0)
    curves = [[rng.uniform(0.5, 3.0) / (1 + rng.uniform(0, 0.2) * s) for s in range(30)] for _ in range(12)]

    def stopped(steps: Sequence[int], storage: str) -> list[int | None]:
        study = optuna.create_study(study_name="s", storage=storage, pruner=make_pruner(search, 30))
        where = []
        for curve in curves:
            trial = study.ask()
            at = next((s for s in steps if trial.report(curve[s], s) is None and trial.should_prune()), None)
            where.append(at)
            if at is None:
                study.tell(trial, curve[-1])
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        return where

    every_step = stopped(range(1, 30), "sqlite:///:memory:")
    at_rungs = stopped(look_steps(search, 30), "sqlite:///:memory:")
    assert every_step == at_rungs and any(at is not None for at in at_rungs)


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ("  steps: 8\n", "tune.prune_after", "2 is not below a trial's 2 optimizer steps"),  # max_steps 2
        ("  steps: 2\n", "tune.prune_after", "2 is not below a trial's 2 optimizer steps"),
        ("  pruner: none\n", "tune.prune_after", "but tune.pruner is none, so no trial is looked at"),
        (
            "  search: {training.max_steps: {values: [4, 8]}}\n",
            "tune.pruner",
            "training.max_steps is searched",
        ),
    ],
)
def test_a_pruner_that_could_not_look_before_the_last_step_is_a_spec_error(
    specs: Path, change: str, key: str, words: str
) -> None:
    profile = _profile().replace("models: [tiny]", "models: [smollm2-135m]")
    line = change.split(":")[0] + ":"
    profile = "\n".join(ln for ln in profile.splitlines() if not ln.startswith(line)) + "\n"
    if change != "  steps: 8\n":
        profile += change
    path = specs / "profiles" / "search.yaml"
    path.write_text(profile)
    with pytest.raises(SpecError) as raised:
        expand(SpecStore(specs), "search")
    message = str(raised.value)
    assert str(path) in message and f"key {key!r}" in message and words in message
