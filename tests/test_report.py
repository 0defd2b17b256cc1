"""``peftcore report`` from synthetic records: files, tables, seeds, plots, comparison, safety."""

from __future__ import annotations

import base64
import csv
import io
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
from report_fixtures import chromium, chromium_flags, grid, make_record, write_run

import peftcore.report.build as report
from peftcore import cli
from peftcore.report import ReportError, compact_table, pareto_front, write_report
from peftcore.report.formats import fmt_bytes, fmt_count
from peftcore.report.rows import Stat
from peftcore.units import format_bytes

RUN_ID = "20260101-120000-quick"
PLOT_IDS = (
    "plot-pareto-arc_easy-smollm2-135m",
    "plot-pareto-lambada-smollm2-135m",
    "plot-pareto-squad-smollm2-135m",
    "plot-train-time",
    "plot-adapter-size",
    "plot-loss-curves",
    "plot-held-out-vs-seen",
)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """One report of a three-seed run with an OOM case and a corrupted record file."""
    root = tmp_path_factory.mktemp("seeded")
    records = grid(tasks=("arc_easy", "squad", "lambada"), seeds=(0, 1, 2), run_id=RUN_ID)
    records = [r for r in records if r["case_id"] != "dora-smollm2-135m-squad-seed2"]
    records.append(
        make_record("dora", "squad", seed=2, status="oom", reason="out of memory: tried to allocate 1.50 GiB")
    )
    run = write_run(root / "runs", RUN_ID, records)
    (run / "cases" / "zz-truncated.json").write_text('{"format": 1, "case_id": ')
    out = write_report([run], root / "reports" / RUN_ID)
    return run, out, records


def _csv_rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# --------------------------------------------------------------------------- files and tables


def test_report_folder_holds_the_three_files(seeded: tuple[Path, Path, list[dict]]) -> None:
    _, out, _ = seeded
    assert sorted(p.name for p in out.iterdir()) == [
        ".peftcore-report",
        "report.html",
        "summary.csv",
        "summary.md",
    ]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp or old folders left


def test_summary_csv_has_one_row_per_case_with_every_metric_and_cost(
    seeded: tuple[Path, Path, list[dict]],
) -> None:
    _, out, records = seeded
    rows = _csv_rows(out / "summary.csv")
    assert len(rows) == len(records)
    columns = set(rows[0])
    assert {"case_id", "status", "reason", "seed", "primary_metric"} <= columns
    assert {
        "held_out.accuracy",
        "seen.accuracy",
        "held_out.f1",
        "seen.exact_match",
        "held_out.perplexity",
    } <= columns
    assert {"training.peak_memory_bytes", "training.train_seconds", "training.adapter_bytes"} <= columns
    assert {
        "inference.latency_ms_per_example",
        "inference.peak_memory_bytes",
        "base_model.footprint_bytes",
    } <= columns
    assert "training.loss_curve" not in columns
    lora = next(r for r in rows if r["case_id"] == "lora-smollm2-135m-squad-seed1")
    source = next(r for r in records if r["case_id"] == "lora-smollm2-135m-squad-seed1")
    assert float(lora["held_out.f1"]) == source["metrics"]["held_out"]["f1"]
    assert int(lora["training.peak_memory_bytes"]) == source["training"]["peak_memory_bytes"]
    oom = next(r for r in rows if r["status"] == "oom")
    assert oom["reason"].startswith("out of memory")
    assert oom["held_out.f1"] == "" and oom["training.peak_memory_bytes"] == ""  # empty, never zero


def test_summary_md_tables_show_mean_and_std_over_seeds(seeded: tuple[Path, Path, list[dict]]) -> None:
    _, out, records = seeded
    text = (out / "summary.md").read_text()
    values = [
        r["metrics"]["held_out"]["accuracy"]
        for r in records
        if r["method"] == "lora" and r["task"] == "arc_easy"
    ]
    expected = f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
    [line] = [line for line in text.splitlines() if line.startswith("| lora") and expected in line]
    assert "| 3 |" in line  # seeds
    assert " GiB" in line and " min" in line and "921.6 K (0.69%)" in line and " ms" in line
    assert "Values are mean ± standard deviation over the seeds" in text


def test_summary_md_has_a_table_per_task_with_units_and_direction(
    seeded: tuple[Path, Path, list[dict]],
) -> None:
    _, out, _ = seeded
    text = (out / "summary.md").read_text()
    assert [line for line in text.splitlines() if line.startswith("## ")] == [
        "## arc_easy",
        "## lambada",
        "## squad",
        "## Failed cases",
        "## Record files that could not be read",
    ]
    assert "primary metric: held-out perplexity (lower is better)" in text
    header = next(line for line in text.splitlines() if line.startswith("| Method") and "f1" in line)
    for column in (
        "Peak train memory",
        "Train time",
        "Adapter size",
        "Trainable params",
        "Held-out f1",
        "Seen f1",
    ):
        assert column in header
    assert "Latency" in header and "Inference memory" in header
    base = next(line for line in text.splitlines() if line.startswith("| base"))
    assert "| — | — | — | — |" in base  # the untrained base has no training costs, not zeros
    assert "- quality/memory Pareto front: qlora, lora, dora, full" in text


def test_failed_cases_and_unreadable_files_have_their_own_sections(
    seeded: tuple[Path, Path, list[dict]],
) -> None:
    _, out, _ = seeded
    text = (out / "summary.md").read_text()
    failed = text.split("## Failed cases")[1].split("##")[0]
    assert "| dora-smollm2-135m-squad-seed2 | oom | out of memory: tried to allocate 1.50 GiB |" in failed
    squad_table = text.split("## squad")[1].split("##")[0]
    dora = next(line for line in squad_table.splitlines() if line.startswith("| dora"))
    assert "| 2 |" in dora  # two finished seeds; the OOM is not averaged in as zeros
    unreadable = text.split("## Record files that could not be read")[1]
    assert "zz-truncated.json: not a readable JSON record" in unreadable


# --------------------------------------------------------------------------- html


def _images(page: str) -> dict[str, str]:
    return dict(re.findall(r'<img id="([^"]+)" alt="[^"]+" src="data:image/png;base64,([^"]+)"', page))


def test_report_html_is_self_contained_with_every_plot(seeded: tuple[Path, Path, list[dict]]) -> None:
    _, out, _ = seeded
    page = (out / "report.html").read_text()
    images = _images(page)
    assert set(images) == set(PLOT_IDS)
    assert page.count("<img ") == len(PLOT_IDS)
    for data in images.values():
        png = base64.b64decode(data)
        assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5_000
    # Nothing to fetch. plotly.js, inlined whole, names URLs it never loads for a scatter plot
    # (map tiles, data: icons); the browser test runs the page with the network blocked.
    ours = re.sub(r"<script>/\*\*\n\* plotly\.js v.*?</script>", "", page, flags=re.S)
    assert len(ours) < len(page) - 4_000_000
    assert not re.search(r"""(src|href)=["']?(https?:)?//|url\(|@import""", ours)
    for section in ('id="highlights"', 'id="tables"', 'id="failed"', 'id="problems"'):
        assert section in page
    assert "dora-smollm2-135m-squad-seed2" in page and "zz-truncated.json" in page


def test_pareto_front_respects_direction() -> None:
    points = [("qlora", 0.7, 0.46), ("lora", 1.2, 0.47), ("ia3", 1.1, 0.44), ("full", 2.3, 0.49)]
    assert pareto_front(points, higher_better=True) == ["qlora", "lora", "full"]
    perplexity = [("qlora", 0.7, 33.0), ("lora", 1.2, 32.0), ("ia3", 1.1, 35.0), ("full", 2.3, 34.0)]
    assert pareto_front(perplexity, higher_better=False) == ["qlora", "lora"]
    assert pareto_front([("a", 1.0, float("nan"))], higher_better=True) == []


@pytest.mark.parametrize("size", [0, 512, 1023, 1024, 1536, 2**20 - 1, 1.18 * 2**30, 3 * 2**40, -5e9])
def test_a_single_byte_value_reads_the_same_in_tables_and_messages(size: float) -> None:
    assert fmt_bytes(Stat(size, None, 1)) == format_bytes(size)


def test_counts_are_shortened_above_a_thousand() -> None:
    counts = [fmt_count(v) for v in (512, 921_600, 134_515_008, 1.5e9)]
    assert counts == ["512", "921.6 K", "134.5 M", "1.5 B"]


@pytest.mark.slow
def test_report_renders_in_headless_chromium(seeded: tuple[Path, Path, list[dict]], tmp_path: Path) -> None:
    _, out, _ = seeded
    browser = chromium()
    assert browser is not None
    flags = chromium_flags(tmp_path / "profile")
    url = (out / "report.html").resolve().as_uri()
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=90, check=True
    ).stdout
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    # The page's own script marks <body> once every <img> decoded with a non-zero width.
    assert f'data-plot-count="{len(PLOT_IDS)}"' in body.group(0)
    assert 'data-plots-ok="true"' in body.group(0)
    shot = tmp_path / "page.png"
    subprocess.run(
        [browser, *flags, f"--screenshot={shot}", "--window-size=1400,3000", url],
        capture_output=True,
        timeout=90,
        check=True,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000


# --------------------------------------------------------------------------- two runs


def test_two_runs_are_compared_case_by_case(tmp_path: Path) -> None:
    old = write_run(tmp_path / "runs", "old", grid(methods=("base", "lora", "qlora"), tasks=("squad",)))
    new_records = grid(methods=("base", "lora", "dora"), tasks=("squad",))
    new_records[1]["metrics"]["held_out"]["f1"] = 0.30  # lora: 0.355 -> 0.30
    new_records[1]["training"]["peak_memory_bytes"] = 2**30  # lora: 1.18 GiB -> 1.00 GiB
    new = write_run(tmp_path / "runs", "new", new_records)
    out = write_report([old, new], tmp_path / "reports" / "new-vs-old")
    rows = _csv_rows(out / "comparison.csv")
    by = {(r["case_id"], r["quantity"]): r for r in rows}
    f1 = by[("lora-smollm2-135m-squad", "f1")]
    assert (float(f1["old"]), float(f1["new"]), f1["verdict"]) == (0.355, 0.30, "worse")
    assert float(f1["delta"]) == pytest.approx(-0.055)
    assert by[("lora-smollm2-135m-squad", "training.peak_memory_bytes")]["verdict"] == "better"
    assert by[("base-smollm2-135m-squad", "seen.f1")]["verdict"] == "same"
    assert {r["verdict"] for r in rows if r["case_id"].startswith(("dora", "qlora"))} == {
        "only in new",
        "only in old",
    }
    text = (out / "summary.md").read_text()
    assert "## Comparison with old" in text
    assert "only in new: dora-smollm2-135m-squad" in text and "only in old: qlora-smollm2-135m-squad" in text
    assert re.search(
        r"\| lora-smollm2-135m-squad \| f1 \| 0\.355 \| 0\.3 \| -0\.055 \(-15\.5%\) \| ▼ worse \|", text
    )
    per_case, changed = text.split("### Per case")[1].split("### Every value that changed")
    lora = r"\| lora-smollm2-135m-squad \| f1 \| 0\.355 \| 0\.3 \| -0\.055 \(-15\.5%\) ▼ "
    assert re.search(lora + r"\| -1\d\.\d% ▲ \| ±0 \|", per_case)  # memory down 15 %: better
    assert "| base-smollm2-135m-squad | f1 | 0.31 | 0.31 | ±0 | — | — |" in per_case
    assert "base-smollm2-135m-squad" not in changed  # unchanged values are left to comparison.csv
    assert "1 values better, 1 worse" in text
    page = (out / "report.html").read_text()
    assert 'id="comparison"' in page and '<td class="num worse">-0.055 (-15.5%) ▼</td>' in page


def test_two_runs_without_a_common_case_is_an_error(tmp_path: Path) -> None:
    a = write_run(tmp_path, "a", grid(methods=("lora",), tasks=("squad",)))
    b = write_run(tmp_path, "b", grid(methods=("qlora",), tasks=("squad",)))
    with pytest.raises(ReportError, match="runs a and b have no case in common"):
        write_report([a, b], tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- writing safely


@pytest.fixture
def no_plots(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests of how the folder is written do not need the (slowest) part: drawing."""
    monkeypatch.setattr(report, "draw_plots", lambda run: {})


def _small_run(root: Path, run_id: str = "small", finished_at: str = "2026-01-01T12:06:00") -> Path:
    records = grid(methods=("base", "lora"), tasks=("arc_easy",), provenance={"finished_at": finished_at})
    return write_run(root, run_id, records)


def test_a_new_report_replaces_the_old_one_whole(tmp_path: Path, no_plots: None) -> None:
    run = _small_run(tmp_path / "runs")
    out = tmp_path / "reports" / "small"
    write_report([run], out)
    (out / "stale.txt").write_text("from an older report")
    write_report([run], out)
    assert not (out / "stale.txt").exists()
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["small"]


def test_a_failure_while_building_leaves_the_old_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_plots: None
) -> None:
    run = _small_run(tmp_path / "runs")
    out = write_report([run], tmp_path / "reports" / "small")
    before = (out / "summary.md").read_text()

    def broken_write(path: Path, data: bytes) -> None:
        if path.name == "report.html":
            raise OSError(28, "No space left on device")
        path.write_bytes(data)

    monkeypatch.setattr(report, "atomic_write_bytes", broken_write)
    with pytest.raises(ReportError, match=r"could not write the report .*No space left on device"):
        write_report([run], out)
    assert (out / "summary.md").read_text() == before
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["small"]


def test_a_failure_while_swapping_the_folders_puts_the_old_report_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_plots: None
) -> None:
    run = _small_run(tmp_path / "runs")
    out = write_report([run], tmp_path / "reports" / "small")
    before = (out / "summary.md").read_text()
    rename = os.rename

    def failing_rename(src: str | Path, dst: str | Path) -> None:
        if Path(dst) == out and Path(src).name.startswith(f".{out.name}."):  # the new folder moving in
            raise OSError(18, "Invalid cross-device link")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(ReportError, match=r"could not write the report .*Invalid cross-device link"):
        write_report([run], out)
    assert (out / "summary.md").read_text() == before
    assert sorted(p.name for p in (tmp_path / "reports").iterdir()) == ["small"]


def test_refuses_to_replace_a_folder_that_is_not_a_report(tmp_path: Path, no_plots: None) -> None:
    run = _small_run(tmp_path / "runs")
    with pytest.raises(ReportError, match=r"refusing to replace .* not a peftcore report folder"):
        write_report([run], tmp_path / "runs")  # e.g. --out pointing at the results
    assert (run / "cases").is_dir()


def test_bad_inputs_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="does not exist"):
        write_report([tmp_path / "nope"], tmp_path / "out")
    with pytest.raises(ReportError, match="is not a run folder"):
        write_report([tmp_path], tmp_path / "out")
    empty = tmp_path / "runs" / "empty"
    (empty / "cases").mkdir(parents=True)
    (empty / "cases" / "x.json").write_text("[]")
    with pytest.raises(ReportError) as info:
        write_report([empty], tmp_path / "out")
    assert "has no readable case records; 1 unreadable, first:" in str(info.value)
    assert "\n" not in str(info.value)


# --------------------------------------------------------------------------- CLI


def test_cli_reports_the_newest_run_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    # The store's "newest": the run whose newest record finished last (then the later run id, which
    # would pick "older" here: the record times must decide), not the folder's modification time.
    older = _small_run(Path("reports/runs"), "older", finished_at="2026-01-01T12:06:00")
    newer = _small_run(Path("reports/runs"), "newer", finished_at="2026-01-02T09:30:00")
    os.utime(older / "cases", (2_000_000, 2_000_000))  # a later mtime does not make a run newer
    os.utime(newer / "cases", (1_000_000, 1_000_000))
    assert cli.main(["report"]) == 0
    assert (tmp_path / "reports" / "newer" / "report.html").is_file()
    assert (
        "wrote reports/newer/: summary.csv, summary.md, report.html (2 cases of newer"
        in capsys.readouterr().out
    )
    assert cli.main(["report", "older", str(newer)]) == 0
    assert (tmp_path / "reports" / "newer-vs-older" / "comparison.csv").is_file()


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["report", "missing-run"], "peftcore report: error: no run 'missing-run'"),
        (["report", "a", "b", "c"], "give one run, or two to compare"),
    ],
)
def test_cli_errors_exit_2_with_one_line(
    argv: list[str], words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([*argv, "--results-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_cli_warns_about_unreadable_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _small_run(tmp_path / "runs")
    (run / "cases" / "bad.json").write_text("{")
    assert (
        cli.main(["report", "small", "--results-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "o")])
        == 0
    )
    assert "warning: 1 record file(s) of small could not be read" in capsys.readouterr().err


def test_report_module_imports_no_plotting_library() -> None:
    code = (
        "import sys, peftcore.report, peftcore.report.cli; "
        "sys.exit(any(m in sys.modules for m in ('matplotlib', 'pandas')))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --------------------------------------------------------------------------- terminal table


def test_compact_table() -> None:
    records = [
        make_record("lora", "arc_easy"),
        make_record("base", "squad"),
        make_record(
            "qlora", "squad", status="oom", reason="out of memory: tried to allocate 1.50 GiB\ntraceback"
        ),
    ]
    lines = compact_table(records).splitlines()
    assert lines[0].split() == ["case", "status", "train", "time", "peak", "memory", "held-out", "(primary)"]
    assert re.fullmatch(
        r"lora-smollm2-135m-arc_easy\s+finished\s+3 min \d\d s\s+1\.1\d GiB\s+accuracy 0\.475", lines[1]
    )
    assert re.fullmatch(r"base-smollm2-135m-squad\s+finished\s+—\s+—\s+f1 0\.310", lines[2])
    assert re.fullmatch(
        r"qlora-smollm2-135m-squad\s+oom\s+—\s+—\s+out of memory: tried to allocate 1\.50 GiB", lines[3]
    )
    assert compact_table([]) == "no case records"


def test_device_and_learning_rates_read_as_words(tmp_path: Path) -> None:
    device = {"device": "cpu", "torch_threads": 2, "name": "x86_64", "cpu_count": 2, "fast_bf16": True}
    records = grid(methods=("base", "lora", "full"), tasks=("squad",), provenance={"device": device})
    full = next(r for r in records if r["method"] == "full")
    full["spec"]["training"]["learning_rate"] = 1e-5
    out = write_report([write_run(tmp_path / "runs", "r1", records)], tmp_path / "report")
    md = (out / "summary.md").read_text()
    assert "- **Device:** cpu (x86_64, 2 cores, 2 torch threads, fast bf16)" in md  # an older record
    assert "learning rate 1e-05 (full) / 0.0002 (lora)" in md  # base does not train
    device.update(cpu_model="Xeon 8488C", cpu_isa="amx")
    newer = grid(methods=("base",), tasks=("squad",), provenance={"device": device})
    out = write_report([write_run(tmp_path / "runs", "r2", newer)], tmp_path / "report2")
    md = (out / "summary.md").read_text()
    assert "- **Device:** cpu (Xeon 8488C, amx, 2 cores, 2 torch threads, fast bf16)" in md
