"""The report's Tuning section, from hand-built records shaped like those a search writes
(:func:`peftcore.pipeline.tuning.record_block`): trials, tuned runs and default runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from report_fixtures import make_record, scored, write_run

from peftcore.report.build import build_report, read_run
from peftcore.report.rows import group_rows
from peftcore.report.tuning import (
    PRUNED_Y,
    PrunedPoint,
    method_search,
    plot_search,
    ranks,
    search_figure,
    tuning_md,
    tuning_tables,
)
from peftcore.vocab.quantities import Quantity
from peftcore.vocab.record import is_trial

LR = "training.learning_rate"
RATES = (1e-4, 1e-3, 1e-2)
# method -> each trial's objective (brier_score on the tuning split, lower is better)
OBJECTIVES = {"lora": (0.30, 0.20, 0.22), "ia3": (0.40, 0.35, 0.25)}
OWN = {"lora": 2e-4, "ia3": 2e-4}


def _study(method: str) -> str:
    return f"{method}-smollm2-135m-sst2"


def trial(method: str, index: int) -> dict[str, Any]:
    """A trial as a session writes it: scored on the tuning split only, its objective in tuning."""
    value = OBJECTIVES[method][index]
    record = make_record(method, "sst2", training={"train_seconds": 10.0 + index})
    record.update(
        case_id=f"{_study(method)}-trial{index}",
        metrics={"tune": {"brier_score": value, "loss": 0.7}},
        tuning={
            "kind": "trial",
            "study": _study(method),
            "values": {LR: RATES[index]},
            "defaults": {LR: OWN[method]},
            "index": index,
            "objective": {"metric": "brier_score", "direction": "minimize", "value": value, "stderr": 0.02},
        },
    )
    return record


def _choice(method: str) -> dict[str, Any]:
    values = OBJECTIVES[method]
    best = min(range(3), key=values.__getitem__)
    return {
        "objective": {"metric": "brier_score", "direction": "minimize"},
        "trials": [
            {
                "case_id": f"{_study(method)}-trial{i}",
                "status": "finished",
                "values": {LR: RATES[i]},
                "value": values[i],
                "stderr": 0.02 if i else None,  # one trial without a standard error
            }
            for i in range(3)
        ],
        "finished": 3,
        "chosen": {LR: RATES[best]},
        "chosen_trial": f"{_study(method)}-trial{best}",
        "why": "the best brier_score on the tuning split (minimize)",
    }


def _search_spec(choose: str = "best") -> dict[str, Any]:
    return {"search": {LR: {"low": 1e-4, "high": 1e-2, "log": True}}, "choose": choose}


def run_record(method: str, kind: str, accuracy: float, seed: int) -> dict[str, Any]:
    """A tuned or default run of ``method``, scored on 40 held-out examples."""
    record = make_record(method, "sst2", seed=seed, training={"train_seconds": 30.0})
    record["spec"]["tuning"] = {"kind": kind, "study": _study(method), "search": _search_spec()}
    block: dict[str, Any] = {"kind": kind, "study": _study(method), "defaults": {LR: OWN[method]}}
    if kind == "tuned":
        record["case_id"] = f"{_study(method)}-tuned-seed{seed}"
        block.update(values={LR: _choice(method)["chosen"][LR]}, **_choice(method))
    else:
        block["values"] = {LR: OWN[method]}
    record["tuning"] = block
    right = round(accuracy * 40)
    return scored(record, {"accuracy": [1.0] * right + [0.0] * (40 - right)})


def records(*, with_defaults: bool = True) -> list[dict[str, Any]]:
    out = [make_record("base", "sst2", seed=s) for s in (0, 1)]
    for method, default, tuned in (("lora", 0.55, 0.80), ("ia3", 0.70, 0.75)):
        out += [trial(method, i) for i in range(3)]
        out += [run_record(method, "tuned", tuned, s) for s in (0, 1)]
        if with_defaults:
            out += [run_record(method, "default", default, s) for s in (0, 1)]
    return out


def _run(tmp_path: Path, rows: list[dict[str, Any]]) -> Any:
    return read_run(write_run(tmp_path / "runs", "tune-run", rows))


def test_trials_and_default_runs_are_set_apart_from_the_compared_records(tmp_path: Path) -> None:
    run = _run(tmp_path, records())
    assert sorted(r["case_id"] for r in run.records) == sorted(
        [f"base-smollm2-135m-sst2-seed{s}" for s in (0, 1)]
        + [f"{_study(m)}-tuned-seed{s}" for m in ("lora", "ia3") for s in (0, 1)]
    )
    assert len(run.search) == 6 + 4  # three trials and two default runs per method
    # One row per method in the comparison: the default runs do not join the tuned runs' seeds.
    rows = group_rows(run.records)[("smollm2-135m", "sst2")]
    assert [len(r.records) for r in rows] == [2, 2, 2]


def test_the_table_sets_each_methods_default_beside_its_tuned_values(tmp_path: Path) -> None:
    (table,) = tuning_tables(_run(tmp_path, records()))
    assert table.header == [
        "Method",
        "Default learning_rate",
        "Chosen learning_rate",
        "Choice",
        "Held-out accuracy at default",
        "Held-out accuracy tuned",
        "Rank at default",
        "Rank tuned",
        "Trials",
        "Trials' train time",
        "Tuned run's train time",
    ]
    by_method = {row[0]: row for row in table.rows}
    assert list(by_method) == ["ia3", "lora"]  # the report's method order
    ia3, lora = by_method["ia3"], by_method["lora"]
    assert lora[1:4] == ["0.0002", "0.001", "best"] and ia3[2] == "0.01"
    # Held-out at default and tuned, each mean (CI ± half-width) over the two seeds.
    assert lora[4].startswith("0.550 (CI ± 0.1") and lora[5].startswith("0.800 (CI ± 0.1")
    # The search reorders the methods: ia3 led at default, lora leads tuned.
    assert (ia3[6], ia3[7], lora[6], lora[7]) == ("1 of 2", "2 of 2", "2 of 2", "1 of 2")
    assert lora[8:] == ["3", "33.0 s", "30.0 s"]  # 10 + 11 + 12 s of trials; the tuned run's 30 s
    why = "the best brier_score on the tuning split (minimize)"
    assert table.notes == [f"ia3: {why}", f"lora: {why}"]


def test_without_default_runs_the_table_has_no_default_columns_and_says_why(tmp_path: Path) -> None:
    (table,) = tuning_tables(_run(tmp_path, records(with_defaults=False)))
    assert not any("default" in h.lower() and h != "Default learning_rate" for h in table.header)
    assert "set tune.compare_default" in table.note
    lora = next(row for row in table.rows if row[0] == "lora")
    assert lora[1] == "0.0002"  # the method's own value, from the tuned record's defaults
    assert lora[5] == "1 of 2"


def test_a_run_without_a_search_has_no_tuning_section(tmp_path: Path) -> None:
    run = _run(tmp_path, [make_record(m, "sst2") for m in ("base", "lora")])
    assert tuning_tables(run) == [] and tuning_md(run) == []


def test_ranks_follow_the_metrics_direction_and_ties_share_a_rank(tmp_path: Path) -> None:
    rows = group_rows(_run(tmp_path, records()).records)[("smollm2-135m", "sst2")]
    assert ranks(rows, Quantity("held_out", "accuracy")) == {"base": 3, "ia3": 2, "lora": 1}
    tied = group_rows([make_record(m, "sst2", held_out={"accuracy": 0.6}) for m in ("lora", "ia3")])
    assert ranks(tied[("smollm2-135m", "sst2")], Quantity("held_out", "accuracy")) == {"lora": 1, "ia3": 1}


def test_the_plot_has_each_trial_against_its_rate_and_the_choice_ringed(tmp_path: Path) -> None:
    tuned = run_record("ia3", "tuned", 0.75, 0)
    search = method_search(tuned)
    assert search is not None and search.key == LR and search.log
    assert [(p.x, p.objective, p.stderr, p.chosen) for p in search.points] == [
        (1e-4, 0.40, None, False),
        (1e-3, 0.35, 0.02, False),
        (1e-2, 0.25, 0.02, True),
    ]
    (table,) = tuning_tables(_run(tmp_path, records()))
    assert table.objective_words == "tuning-split brier_score (minimize: lower is better)"
    plot = plot_search(table, {"lora": "#1f77b4", "ia3": "#ff7f0e"})
    assert plot is not None and plot.id == "plot-tuning-sst2-smollm2-135m"
    assert plot.png.startswith(b"\x89PNG")


def test_a_search_over_another_key_is_plotted_against_it() -> None:
    tuned = run_record("lora", "tuned", 0.8, 0)
    block = tuned["tuning"]
    for row in block["trials"]:
        row["values"] = {"adapter.r": 4 * 2 ** int(row["case_id"][-1])}
    block["chosen"] = {"adapter.r": 8}
    tuned["spec"]["tuning"]["search"]["search"] = {"adapter.r": {"values": [4, 8, 16]}}
    search = method_search(tuned)
    assert search is not None and search.key == "adapter.r"
    assert [p.x for p in search.points] == [4, 8, 16]


def test_the_report_files_carry_the_section(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "runs", "tune-run", records())
    written = build_report([run_dir], tmp_path / "out")
    summary = (written.out_dir / "summary.md").read_text()
    page = (written.out_dir / "report.html").read_text()
    assert "## Tuning" in summary and "| lora | 0.0002 | 0.001 | best |" in summary
    assert '<section id="tuning">' in page and 'id="plot-tuning-sst2-smollm2-135m"' in page
    assert '<a href="#tuning">Tuning</a>' in page
    # Neither trials nor default runs are rows of summary.csv.
    csv = (written.out_dir / "summary.csv").read_text()
    assert "-trial0" not in csv and "lora-smollm2-135m-sst2-seed0" not in csv


def pruned_and_failed(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` with lora's first trial (1e-4, its worst) stopped by the pruner at step 2 and
    ia3's first trial failed, in the trials' records and in the tuned runs' lists of them."""
    for record in rows:
        block = record.get("tuning") or {}
        if record["case_id"] == f"{_study('lora')}-trial0":
            record.update(metrics={}, uncertainty={})
            block["objective"].update(value=None, stderr=None)
            block["pruning"] = {
                "pruner": "successive_halving",
                "after": 2,
                "at": [2, 6],
                "steps": 8,
                "intermediate": [[2, 11.2]],
                "pruned_at_step": 2,
                "seconds": 0.6,
            }
        elif record["case_id"] == f"{_study('ia3')}-trial0":
            record.update(status="failed", reason="diverged: the loss was nan at step 3", metrics={})
            block["objective"].update(value=None, stderr=None)
        elif block.get("kind") == "tuned":
            first = block["trials"][0]
            first.update(value=None, stderr=None, pruned_at_step=None)
            if record["method"] == "lora":
                first["pruned_at_step"] = 2
                block.update(finished=2, pruned=1)
            else:
                first["status"] = "failed"
                block["finished"] = 2
    return rows


def test_a_pruned_trial_is_counted_apart_from_a_failed_one(tmp_path: Path) -> None:
    run = _run(tmp_path, pruned_and_failed(records()))
    (table,) = tuning_tables(run)
    assert {row[0]: row[8] for row in table.rows} == {"ia3": "3 (1 failed)", "lora": "3 (1 pruned)"}
    lora = next(line for line in tuning_md(run) if line.startswith("| lora |"))
    assert lora.endswith("| 3 (1 pruned) | 33.0 s | 30.0 s |")  # the pruned trial's time counts
    # Without the trials' records in the run, the tuned runs' lists of them give the same counts.
    tuned_only = [r for r in pruned_and_failed(records()) if not is_trial(r)]
    (table,) = tuning_tables(_run(tmp_path / "tuned-only", tuned_only))
    assert {row[0]: row[8] for row in table.rows} == {"ia3": "3 (1 failed)", "lora": "3 (1 pruned)"}


def test_a_pruned_trial_is_drawn_at_its_value_as_an_x_along_the_bottom(tmp_path: Path) -> None:
    rows = pruned_and_failed(records())
    lora = method_search(next(r for r in rows if r["case_id"] == f"{_study('lora')}-tuned-seed0"))
    ia3 = method_search(next(r for r in rows if r["case_id"] == f"{_study('ia3')}-tuned-seed0"))
    assert lora is not None and ia3 is not None
    assert [p.x for p in lora.points] == [1e-3, 1e-2] and lora.pruned == [PrunedPoint(1e-4, 2)]
    assert [p.x for p in ia3.points] == [1e-3, 1e-2] and ia3.pruned == []  # the failed one: neither

    (table,) = tuning_tables(_run(tmp_path, rows))
    colors = {"lora": "#1f77b4", "ia3": "#ff7f0e"}
    fig = search_figure(table, colors)
    (ax,) = fig.axes
    (pruned,) = [line for line in ax.get_lines() if line.get_marker() == "x"]
    assert list(pruned.get_xdata()) == [1e-4] and list(pruned.get_ydata()) == [PRUNED_Y]
    assert pruned.get_transform() == ax.get_xaxis_transform()  # y in axes units: along the bottom
    assert pruned.get_color() == colors["lora"] and pruned.get_label() == "lora: pruned at step 2"
    assert ax.get_xlim()[0] < 1e-4  # no finished trial is that low: the x axis widened to hold it
    assert "lora: pruned at step 2" in [t.get_text() for t in fig.legends[0].get_texts()]
    # ia3's failed trial (1e-4 too) is drawn nowhere: no point of any trial sits at 1e-4.
    drawn = [x for c in ax.collections for x, _ in c.get_offsets()] + [
        x for line in ax.get_lines() if line is not pruned for x in line.get_xdata()
    ]
    assert 1e-4 not in drawn
    plot = plot_search(table, colors)
    assert plot is not None and plot.alt.endswith("; pruned trials as an x along the bottom")
