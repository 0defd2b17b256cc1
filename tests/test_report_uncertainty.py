"""The report says what is certain: intervals after values, a "best" only when a paired test can
tell it from the runner-up, comparisons with the base under Holm's correction, what the held-out
examples can detect, and faded points on the interactive plot. Hand-built records: the same 100
held-out examples, known 0/1 scores."""

from __future__ import annotations

import json
import math
import re
import statistics
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import make_record, scored, write_run

from peftcore.report import write_report
from peftcore.report.certainty import assess, fmt_p
from peftcore.report.explorer import explorer_data
from peftcore.report.formats import fmt_metric_interval
from peftcore.report.rows import Stat, group_rows
from peftcore.report.tables import summary_md
from peftcore.results.frame import records_frame
from peftcore.results.store import read_run
from peftcore.score.uncertainty import metric_intervals
from peftcore.stats.multiple import holm
from peftcore.stats.paired import compare_scores, minimum_detectable_difference

N = 100


def correct_on(first: int, last: int) -> list[float]:
    """0/1 scores of the N examples: right on examples ``first`` to ``last - 1``."""
    return [1.0 if first <= i < last else 0.0 for i in range(N)]


def case(method: str, scores: list[float], **kwargs: Any) -> dict[str, Any]:
    return scored(make_record(method, "arc_easy", **kwargs), {"accuracy": scores})


# base right on 40; lora on 60. ia3 "tied": 58 right, and only 4 examples where the two disagree
# (lora alone on 0-2, ia3 alone on 60): exact McNemar p = 0.625. ia3 "behind": right on 45 of
# lora's 60: 15 discordant pairs, all lora's, p = 2 / 2**15.
BASE, LORA = correct_on(0, 40), correct_on(0, 60)
IA3_TIED, IA3_BEHIND = correct_on(3, 61), correct_on(0, 45)


def _report(tmp_path: Path, records: list[dict[str, Any]]) -> str:
    return summary_md(read_run(write_run(tmp_path / "runs", "r", records)))


def test_methods_a_test_cannot_tell_apart_are_tied_within_noise(tmp_path: Path) -> None:
    text = _report(tmp_path, [case("base", BASE), case("lora", LORA), case("ia3", IA3_TIED)])
    assert "best held-out accuracy" not in text
    line = next(line for line in text.splitlines() if "tied within noise" in line)
    assert line.startswith(
        "- held-out accuracy: lora and ia3 tied within noise (difference +0.020, 95% CI ["
    ), line
    assert "p = 0.625)" in line
    assert "; lora +0.200 vs base, beyond noise: Holm p < 0.001" in line  # the gain over base is real


def test_a_clear_winner_is_named_best(tmp_path: Path) -> None:
    text = _report(tmp_path, [case("base", BASE), case("lora", LORA), case("ia3", IA3_BEHIND)])
    assert "tied within noise" not in text
    line = next(line for line in text.splitlines() if "best held-out accuracy" in line)
    assert re.fullmatch(
        r"- best held-out accuracy: lora 0\.600 \(\+0\.200 vs base, beyond noise: Holm p < 0\.001\), "
        r"ahead of ia3 \(difference \+0\.150, 95% CI \[\+0\.0\d0, \+0\.2\d0\], p < 0\.001\)",
        line,
    ), line


def test_a_gain_over_base_within_noise_is_said_to_be(tmp_path: Path) -> None:
    # lora right on 2 more than base (McNemar p = 0.5), ia3 on 1 fewer than lora (p = 1)
    records = [case("base", BASE), case("lora", correct_on(0, 42)), case("ia3", correct_on(1, 42))]
    text = _report(tmp_path, records)
    assert "- held-out accuracy: lora and ia3 tied within noise (difference +0.010, " in text
    assert "; lora +0.020 vs base, within noise: Holm p = 1" in text


def test_a_tie_with_the_base_says_so_once(tmp_path: Path) -> None:
    records = [case("base", BASE), case("lora", correct_on(0, 42)), case("ia3", correct_on(0, 35))]
    line = next(line for line in _report(tmp_path, records).splitlines() if "tied within noise" in line)
    assert line.startswith(
        "- held-out accuracy: lora and base tied within noise (difference +0.020, 95% CI ["
    )
    assert line.endswith(", p = 0.5)")  # no "vs base" repeated after it


def test_comparisons_with_base_are_marked_after_holm(tmp_path: Path) -> None:
    slight = correct_on(0, 42)
    records = [case("base", BASE), case("lora", LORA), case("ia3", slight)]
    text = _report(tmp_path, records)
    assert (
        "**Paired comparisons.** Held-out accuracy, each method minus the untrained base, paired over the "
        "100 held-out examples. * significant at 95% after Holm's correction over 2 comparisons"
    ) in text
    table = text.split("**Paired comparisons.**")[1]
    assert "| Method | Difference vs base | 95% CI | p | Holm p | Test |" in table
    ia3 = next(line for line in table.splitlines() if line.startswith("| ia3"))
    lora = next(line for line in table.splitlines() if line.startswith("| lora"))
    # the p-values of the paired tests, and Holm's step-down over the two
    p_ia3 = compare_scores(slight, BASE).p_value
    p_lora = compare_scores(LORA, BASE).p_value
    adjusted = holm([p_ia3, p_lora])
    assert f"| {fmt_p(p_ia3)} | {fmt_p(adjusted[0])} | exact McNemar |" in ia3
    assert ia3.startswith("| ia3 | +0.020 |")  # not significant: no mark
    assert lora.startswith("| lora | +0.200 * | [+0.1")
    assert f"| {fmt_p(p_lora)} | {fmt_p(adjusted[1])} |" in lora


def test_holm_runs_over_every_comparison_of_the_report(tmp_path: Path) -> None:
    records = [case("base", BASE), case("lora", LORA), case("ia3", IA3_TIED)]
    records += [
        scored(make_record(m, "squad"), {"f1": scores}) for m, scores in (("base", BASE), ("lora", LORA))
    ]
    certainty = assess(group_rows(records))
    assert {g.family for g in certainty.values()} == {3}
    text = _report(tmp_path, records)
    assert text.count("after Holm's correction over 3 comparisons") == 2


def test_what_the_held_out_examples_can_detect(tmp_path: Path) -> None:
    text = _report(tmp_path, [case("base", BASE), case("lora", LORA), case("ia3", IA3_BEHIND)])
    differences = [a - b for a, b in zip(LORA, IA3_BEHIND, strict=True)]
    mde = minimum_detectable_difference(statistics.stdev(differences), N)
    assert (
        f"- With 100 held-out examples, differences in held-out accuracy under {100 * mde:.1f} points cannot "
        "be detected (80% power, 95%); from the paired per-example differences of lora and ia3."
    ) in text


def test_without_a_paired_test_the_detectable_difference_comes_from_the_base(tmp_path: Path) -> None:
    old = make_record("ia3", "arc_easy", held_out={"accuracy": 0.55})  # the runner-up, not scored
    text = _report(tmp_path, [case("base", BASE), case("lora", LORA), old])
    mde = minimum_detectable_difference(statistics.stdev(BASE) * math.sqrt(2), N)
    assert (
        f"under {100 * mde:.1f} points cannot be detected (80% power, 95%); from base's per-example" in text
    )
    assert "highest held-out accuracy: lora 0.600 (+0.200 vs base, beyond noise: Holm p < 0.001); " in text
    assert "not tested against ia3: no per-example scores" in text


def test_values_carry_half_their_interval(tmp_path: Path) -> None:
    records = [case("base", BASE), case("lora", LORA)]
    text = _report(tmp_path, records)
    interval = records[1]["uncertainty"]["held_out"]["accuracy"]
    width = (interval["ci_high"] - interval["ci_low"]) / 2
    lora = next(line for line in text.splitlines() if line.startswith("| lora"))
    assert f"| 0.600 ± {width:.3f} |" in lora
    assert "± after a value: half the width of its 95% confidence interval" in text


def test_over_seeds_both_spreads_are_labelled_and_compared(tmp_path: Path) -> None:
    records = [
        case(m, scores, seed=s)
        for m, scores in (("base", BASE), ("lora", LORA))
        for s, scores in enumerate([scores, scores[1:] + scores[:1], scores[2:] + scores[:2]])
    ]
    text = _report(tmp_path, records)
    lora = next(line for line in text.splitlines() if line.startswith("| lora"))
    assert re.search(r"\| 0\.600 \(CI ± 0\.09\d\) \|", lora)  # the seeds agree exactly: no ± sd
    assert "Held-out accuracy: the per-example standard error" in text  # seeds do not vary: examples dominate
    assert "more held-out examples would narrow comparisons most." in text
    assert "paired bootstrap (seeds, then examples)" in text


def test_fmt_metric_interval() -> None:
    assert fmt_metric_interval(Stat(0.48, None, 1), 0.0976, over_seeds=False) == "0.480 ± 0.098"
    assert fmt_metric_interval(Stat(0.48, 0.007, 3), 0.0976, over_seeds=True) == "0.480 ± 0.007 (CI ± 0.098)"
    assert fmt_metric_interval(Stat(0.48, None, 1), 0.0976, over_seeds=True) == "0.480 (CI ± 0.098)"
    assert fmt_metric_interval(Stat(0.48, 0.007, 3), None, over_seeds=True) == "0.480 ± 0.007"


def test_old_records_render_bare_with_a_note(tmp_path: Path) -> None:
    records = [make_record(m, "arc_easy") for m in ("base", "lora", "ia3")]  # no uncertainty, no examples
    out = write_report([write_run(tmp_path / "runs", "r", records)], tmp_path / "report")
    text = (out / "summary.md").read_text()
    assert "No 95% interval recorded for held-out accuracy of base, ia3, lora (a record scored before" in text
    assert "±" not in text.split("## arc_easy")[1].split("- ")[0]  # no interval in the table
    assert "± after a value" not in text and "Paired comparisons" not in text
    assert "highest held-out accuracy: lora 0.475 (+0.045 vs base); not tested against ia3" in text
    assert "With 100 held-out examples" not in text  # nothing to compute it from
    assert "Paired comparisons" not in (out / "report.html").read_text()


def test_a_case_without_scores_among_scored_ones_is_not_tested(tmp_path: Path) -> None:
    records = [case("base", BASE), make_record("lora", "arc_easy"), case("ia3", IA3_TIED)]
    out = write_report([write_run(tmp_path / "runs", "r", records)], tmp_path / "report")
    text = (out / "summary.md").read_text()
    assert "No 95% interval recorded for held-out accuracy of lora" in text
    assert "| lora | — | — | — | — | not tested: no per-example scores" in text
    assert "after Holm's correction over 1 comparison " in text
    page = (out / "report.html").read_text()
    assert "not tested: no per-example scores" in page and "Holm&#x27;s correction" in page


# --------------------------------------------------------------------------- the page


def _embedded(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', page, re.S)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_the_page_draws_interval_bars_and_fades_the_tied(tmp_path: Path) -> None:
    records = [case("base", BASE), case("lora", LORA), case("ia3", IA3_TIED), case("dora", IA3_BEHIND)]
    out = write_report([write_run(tmp_path / "runs", "r", records)], tmp_path / "report")
    page = (out / "report.html").read_text()
    data = _embedded(page)
    assert '"error_y"' in page and data["figure"]["data"][0]["error_y"]["type"] == "data"
    [group] = data["groups"]
    points = {p["method"]: p for p in group["points"]}
    interval = records[1]["uncertainty"]["held_out"]["accuracy"]
    width = (interval["ci_high"] - interval["ci_low"]) / 2
    assert points["lora"]["ci"]["held_out.accuracy"] == pytest.approx(width)
    assert "held_out.accuracy.ci_low" not in group["y_columns"]  # an interval end is not a score
    assert group["indistinct"]["held_out.accuracy"] == ["ia3"]  # dora and base are behind for sure
    assert "(95% CI ± " in points["lora"]["hover"]
    # the same as the page would embed, from the frame and the records
    assert data["groups"] == explorer_data(records_frame(records), records)["groups"]


def test_without_records_or_scores_nothing_is_faded() -> None:
    records = [case("base", BASE), case("lora", LORA), case("ia3", IA3_TIED)]
    assert explorer_data(records_frame(records))["groups"][0]["indistinct"] == {}
    old = [make_record("base", "arc_easy"), make_record("lora", "arc_easy")]
    [group] = explorer_data(records_frame(old), old)["groups"]
    assert group["indistinct"] == {} and all(p["ci"] == {} for p in group["points"])


def _perplexity_case(method: str, nll_per_token: float, seed: int | None = None) -> dict[str, Any]:
    """A lambada case scored on 50 documents of 10 tokens, with corpus perplexity's inputs kept."""
    nll = [10 * nll_per_token * (1 + 0.2 * math.sin(i + (seed or 0))) for i in range(50)]
    record = make_record(method, "lambada", seed=seed, held_out={"perplexity": math.exp(sum(nll) / 500)})
    block = {
        "uid": [f"doc-{i}" for i in range(50)],
        "corpus": {"perplexity": {"nll": nll, "tokens": [10] * 50}},
    }
    record["examples"] = {"held_out": block}
    record["uncertainty"] = {"held_out": metric_intervals(record["metrics"]["held_out"], block)}
    return record


def test_a_corpus_metric_is_compared_by_bootstrap_but_not_over_seeds(tmp_path: Path) -> None:
    one_seed = [_perplexity_case("base", 3.6), _perplexity_case("lora", 3.0)]
    text = _report(tmp_path / "one", one_seed)
    assert "| lora | -" in text and "| paired bootstrap |" in text
    assert "over 1 comparison (every" in text
    lora = next(line for line in text.splitlines() if line.startswith("| lora"))
    assert re.search(r"\| 20\.\d\d ± \d\.\d\d \|", lora)  # a bootstrap interval around the perplexity
    seeds = [_perplexity_case(m, v, seed=s) for m, v in (("base", 3.6), ("lora", 3.0)) for s in (0, 1)]
    text = _report(tmp_path / "seeds", seeds)
    assert "not tested against base: perplexity is corpus-level: no paired test over several seeds" in text
    assert "Paired comparisons" not in text  # nothing in it could be tested
