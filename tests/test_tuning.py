"""A profile's ``tune:`` search, run as cases: trials on the tuning split, the study in the run
folder, the compared run at the chosen values. Pytest sessions of the tiny Llama (what is tested
is the search's bookkeeping, not the model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from report_fixtures import read_cases

from peftcore.data import load_task
from peftcore.pipeline.tuning import choose, direction
from peftcore.spec import SpecStore, expand
from peftcore.spec.tuning import grid_values
from peftcore.spec.types import SearchSpace

# The pytest sessions train (the tiny Llama, but several processes): marked slow, not in the
# quick tier; the checks without a model are.
PROFILE = """\
description: a learning-rate search on the tiny Llama
methods: [base, lora]
models: [tiny]
tasks: [sst2]
data: {{train: 8, held_out: 6, seen: 2, tune: 6}}
training: {{max_steps: 2, batch_size: 2, max_length: 64}}
eval: {{batch_size: 4}}
tune:
  search: {{training.learning_rate: {space}}}
  sampler: {sampler}
  points: 3
  trials: 3
  objective: {{metric: brier_score}}
"""
GRID = PROFILE.format(space="{low: 1.0e-4, high: 1.0e-2}", sampler="grid")


@pytest.mark.slow
def test_a_grid_search_trains_its_trials_on_the_tuning_split_then_the_run_at_the_best(
    tiny_project: pytest.Pytester,
) -> None:
    (tiny_project.path / "specs" / "profiles" / "search.yaml").write_text(GRID + "  compare_default: true\n")
    common = ("-p", "no:cacheprovider", "--profile", "search", "--benchmark-disable", "--run-id", "s1")
    result = tiny_project.runpytest_subprocess(*common, "--results-dir", "runs")
    result.assert_outcomes(passed=6)  # base, lora at its own rate, three trials, the tuned run
    records = read_cases(tiny_project.path / "runs" / "s1")
    trials = [records[f"lora-tiny-sst2-trial{i}"] for i in range(3)]
    tuned = records["lora-tiny-sst2-tuned"]
    default = records["lora-tiny-sst2"]

    # Each trial: its grid point, trained and scored on the tuning split alone, adapter not kept.
    assert [t["tuning"]["values"]["training.learning_rate"] for t in trials] == [0.0001, 0.001, 0.01]
    for trial in trials:
        assert trial["status"] == "finished" and set(trial["metrics"]) == {"tune"}
        assert (
            trial["spec"]["training"]["learning_rate"] == trial["tuning"]["values"]["training.learning_rate"]
        )
        assert trial["tuning"]["objective"]["value"] == trial["metrics"]["tune"]["brier_score"]
        assert trial["tuning"]["objective"]["stderr"] > 0 and "loss" in trial["metrics"]["tune"]
        assert trial["adapter_dir"] is None

    # No held-out example takes part in a choice: the trials saw only the tuning split's uids.
    specs = SpecStore(tiny_project.path / "specs")
    case = next(c for c in expand(specs, "search") if c.case_id == "lora-tiny-sst2-tuned")
    data = load_task(case.task, case.data)
    tune_uids = {e.uid for e in data.tune}
    for trial in trials:
        assert set(trial["examples"]["tune"]["uid"]) == tune_uids
    assert not tune_uids & {e.uid for e in data.held_out + data.train}

    # The tuned run: trained at the best trial's rate, scored on held_out, the study named.
    best = min(trials, key=lambda t: t["metrics"]["tune"]["brier_score"])
    assert tuned["tuning"]["chosen"] == best["tuning"]["values"]
    assert tuned["tuning"]["chosen_trial"] == best["case_id"]
    assert tuned["spec"]["training"]["learning_rate"] == best["tuning"]["values"]["training.learning_rate"]
    assert [row["case_id"] for row in tuned["tuning"]["trials"]] == [t["case_id"] for t in trials]
    assert "held_out" in tuned["metrics"] and tuned["tuning"]["finished"] == 3

    # The default run (compare_default): the method's own rate, the tuned run's seed and examples.
    own = default["spec"]["training"]["learning_rate"]
    assert default["tuning"]["kind"] == "default"
    assert default["tuning"]["values"] == {"training.learning_rate": own}
    assert tuned["tuning"]["defaults"] == {"training.learning_rate": own}
    assert (
        default["seed"] == tuned["seed"]
        and default["examples"]["held_out"]["uid"] == (tuned["examples"]["held_out"]["uid"])
    )

    # The report's Tuning section names each method's own and chosen rate, the trials plotted.
    chosen = tuned["tuning"]["chosen"]["training.learning_rate"]
    summary = (tiny_project.path / "s1" / "summary.md").read_text()
    assert "## Tuning" in summary and f"| lora | {own:g} | {chosen:g} | best |" in summary
    assert "Held-out accuracy at default" in summary and "lora-tiny-sst2-trial" not in summary
    page = (tiny_project.path / "s1" / "report.html").read_text()
    assert '<section id="tuning">' in page and 'id="plot-tuning-sst2-tiny"' in page

    # The study, in the run folder: three complete trials at the grid's values.
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tiny_project.path / "runs" / "s1" / "tune" / "lora-tiny-sst2.journal"
    study = optuna.load_study(
        study_name="lora-tiny-sst2", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    assert sorted(t.params["training.learning_rate"] for t in study.trials) == [0.0001, 0.001, 0.01]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert study.best_trial.user_attrs["case_id"] == best["case_id"]

    # The same command again resumes every case (nothing retrained) and asks the study nothing new.
    again = tiny_project.runpytest_subprocess(*common, "--results-dir", "runs")
    again.assert_outcomes(skipped=6)  # each reported as resumed
    assert read_cases(tiny_project.path / "runs" / "s1") == records
    study = optuna.load_study(
        study_name="lora-tiny-sst2", storage=JournalStorage(JournalFileBackend(str(journal)))
    )
    assert len(study.trials) == 3

    # Trials are rows of load_results only when asked for.
    from peftcore import load_results

    compared = load_results(tiny_project.path / "runs" / "s1")
    assert sorted(compared["case_id"]) == ["base-tiny-sst2", "lora-tiny-sst2-tuned"]
    everything = load_results(tiny_project.path / "runs" / "s1", trials=True)
    assert (everything["tuning"] == "trial").sum() == 3 and (everything["tuning"] == "default").sum() == 1
    assert set(everything.loc[everything["tuning"] == "trial", "tuning.values.training.learning_rate"]) == {
        0.0001,
        0.001,
        0.01,
    }


@pytest.mark.slow
def test_a_tuned_run_whose_trials_were_not_selected_fails_saying_so(tiny_project: pytest.Pytester) -> None:
    (tiny_project.path / "specs" / "profiles" / "search.yaml").write_text(GRID)
    result = tiny_project.runpytest_subprocess(
        "-p", "no:cacheprovider", "--profile", "search", "--benchmark-disable", "-k", "tuned"
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        ["*none of its 3 trials has a brier_score on the tuning split*select them with -k*"]
    )


@pytest.mark.slow
def test_a_tpe_search_draws_its_values_from_the_range_and_again_the_same(
    tiny_project: pytest.Pytester,
) -> None:
    profile = PROFILE.format(space="{low: 1.0e-4, high: 1.0e-2}", sampler="tpe")
    (tiny_project.path / "specs" / "profiles" / "search.yaml").write_text(profile)
    drawn = []
    for run in ("t1", "t2"):
        result = tiny_project.runpytest_subprocess(
            "-p",
            "no:cacheprovider",
            "--profile",
            "search",
            "--benchmark-disable",
            "--run-id",
            run,
            "--results-dir",
            f"runs-{run}",
            "-k",
            "lora",
        )
        result.assert_outcomes(passed=4)
        records = read_cases(tiny_project.path / f"runs-{run}" / run)
        drawn.append(
            [
                records[f"lora-tiny-sst2-trial{i}"]["tuning"]["values"]["training.learning_rate"]
                for i in range(3)
            ]
        )
    assert drawn[0] == drawn[1]  # seeded
    assert all(1e-4 <= v <= 1e-2 for v in drawn[0]) and len(set(drawn[0])) == 3


# --------------------------------------------------------------------------- without a model


def test_the_grid_of_a_range_is_log_spaced_and_of_a_list_is_the_list() -> None:
    assert grid_values(SearchSpace(low=1e-5, high=1e-1), 5) == (1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
    assert grid_values(SearchSpace(values=(3e-4, 1e-3)), 5) == (3e-4, 1e-3)
    assert grid_values(SearchSpace(low=2, high=32, log=True), 5, int) == (2, 4, 8, 16, 32)


def _trial(index: int, rate: float, value: float, stderr: float) -> dict[str, Any]:
    return {
        "case_id": f"lora-tiny-sst2-trial{index}",
        "status": "finished",
        "metrics": {"tune": {"brier_score": value}},
        "uncertainty": {"tune": {"brier_score": {"stderr": stderr}}},
        "tuning": {"kind": "trial", "index": index, "values": {"training.learning_rate": rate}},
    }


@pytest.mark.parametrize(
    ("choose_by", "chosen"),
    [("best", 0.001), ("one_se", 0.01)],  # 0.01 is within one standard error of the best
)
def test_the_choice_is_the_best_or_the_largest_rate_within_one_standard_error(
    specs: Path, tmp_path: Path, choose_by: str, chosen: float
) -> None:
    (specs / "profiles" / "search.yaml").write_text(
        GRID.replace("models: [tiny]", "models: [smollm2-135m]").replace(
            "points: 3", f"points: 3\n  choose: {choose_by}"
        )
    )
    case = next(c for c in expand(SpecStore(specs), "search") if c.case_id.endswith("-tuned"))
    assert direction(case.tuning.search) == "minimize"  # brier_score: lower is better
    records = {
        r["case_id"].replace("tiny", "smollm2-135m"): r
        for r in (_trial(0, 0.0001, 0.30, 0.02), _trial(1, 0.001, 0.20, 0.03), _trial(2, 0.01, 0.22, 0.02))
    }
    tuned = choose(tmp_path, case, records)
    assert tuned.training.learning_rate == chosen
    assert tuned.tuning.choice["chosen"] == {"training.learning_rate": chosen}
    assert tuned.tuning.values == {"training.learning_rate": chosen}


@pytest.mark.slow
def test_an_answer_loss_is_the_models_own_loss_on_the_answer_tokens(shipped_specs: Path) -> None:
    """On the tiny Llama: each example's loss equals the cross-entropy the model computes itself
    with every prompt token labelled -100, batched with examples of other lengths."""
    import torch
    from tiny_llama import tiny_base

    from peftcore.score import score_answer_losses
    from peftcore.spec.types import EvalSettings
    from peftcore.train.prompting import PromptFormat

    store = SpecStore(shipped_specs)
    base = tiny_base(store.get("models", "smollm2-135m"))
    task = store.get("tasks", "sst2")
    examples = load_task(task, store.get("profiles", "smoke").data).held_out[:5]
    fmt = PromptFormat.for_model(base.tokenizer, "auto")
    losses = score_answer_losses(
        base.model, fmt, examples, EvalSettings(batch_size=3), device="cpu", precision="fp32"
    )
    for example, loss in zip(examples, losses, strict=True):
        context, answer = fmt.encode_context(example.prompt), fmt.encode_continuation(example.target)
        ids = torch.tensor([context + answer])
        labels = torch.tensor([[-100] * len(context) + answer])
        with torch.no_grad():
            expected = base.model(input_ids=ids, labels=labels).loss.item()
        assert loss == pytest.approx(expected, rel=1e-5)


def test_a_shard_keeps_a_search_whole(specs: Path) -> None:
    """A tuned run reads its trials' records in its own run: --shard never cuts a study apart."""
    from peftcore.pytest_plugin.shard import partition
    from peftcore.results.manifest import Shard

    (specs / "profiles" / "search.yaml").write_text(
        GRID.replace("models: [tiny]", "models: [smollm2-135m]").replace(
            "methods: [base, lora]", "methods: [base, lora, ia3, dora]"
        )
    )
    cases = expand(SpecStore(specs), "search")
    shards = [partition(cases, Shard(i, 3)) for i in (1, 2, 3)]
    assert sorted(c for s in shards for c in s) == sorted(c.case_id for c in cases)
    for study in {c.tuning.study for c in cases if c.tuning is not None}:
        members = {c.case_id for c in cases if c.tuning is not None and c.tuning.study == study}
        assert sum(1 for s in shards if members & s) == 1, study


def test_compare_default_adds_each_methods_plain_runs_with_the_tuned_runs_seeds(specs: Path) -> None:
    profile = GRID.replace("models: [tiny]", "models: [smollm2-135m]") + "  seeds: 2\n"
    (specs / "profiles" / "search.yaml").write_text(profile + "  compare_default: true\n")
    cases = {c.case_id: c for c in expand(SpecStore(specs), "search")}
    defaults = [c for c in cases.values() if c.tuning is not None and c.tuning.kind == "default"]
    tuned = [c for c in cases.values() if c.tuning is not None and c.tuning.kind == "tuned"]
    assert [c.case_id for c in defaults] == [f"lora-smollm2-135m-sst2-seed{s}" for s in (0, 1)]
    assert [c.training.seed for c in defaults] == [c.training.seed for c in tuned] == [0, 1]
    own = cases["base-smollm2-135m-sst2-seed0"].training.learning_rate  # the budget's, unsearched
    for case in defaults:
        assert case.training.learning_rate == own and case.tuning.values == {"training.learning_rate": own}
    assert all(c.tuning.defaults == {"training.learning_rate": own} for c in [*defaults, *tuned])
    # Without the key: no default runs, and the same cases otherwise.
    (specs / "profiles" / "search.yaml").write_text(profile)
    without = {c.case_id: c for c in expand(SpecStore(specs), "search")}
    assert set(cases) - set(without) == {c.case_id for c in defaults}


def test_compare_default_changes_no_case_hash(specs: Path) -> None:
    """The key is left out of every hashed spec: the trials and tuned runs of a profile that does
    not set it hash as before it existed, and setting it changes none of them; a default run's
    hash leaves the search out (nothing searched changes what it trains)."""
    from peftcore.pipeline.identity import _hashed_spec

    def hashed(text: str) -> dict[str, Any]:
        (specs / "profiles" / "search.yaml").write_text(text)
        return {c.case_id: _hashed_spec(c) for c in expand(SpecStore(specs), "search")}

    profile = GRID.replace("models: [tiny]", "models: [smollm2-135m]")
    before, after = hashed(profile), hashed(profile + "  compare_default: true\n")
    assert all("compare_default" not in spec.get("tuning", {}).get("search", {}) for spec in before.values())
    assert {k: v for k, v in after.items() if k in before} == before
    default = after["lora-smollm2-135m-sst2"]
    assert default["tuning"]["kind"] == "default" and "search" not in default["tuning"]
    narrower = hashed(profile.replace("high: 1.0e-2", "high: 1.0e-3") + "  compare_default: true\n")
    assert narrower["lora-smollm2-135m-sst2"] == default
