"""The report's interactive comparison: the data it embeds (fronts, directions, seeds, failed
cases) and, in headless Chromium from a file with the network blocked, the plot it draws."""

from __future__ import annotations

import html
import json
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from report_fixtures import GIB, chromium, chromium_flags, grid, make_record, scored, write_run

from peftcore.report import write_report
from peftcore.report.explorer import explorer_data, two_way_front
from peftcore.results.frame import records_frame

MEMORY, SECONDS, LATENCY = (
    "training.peak_memory_bytes",
    "training.train_seconds",
    "inference.latency_ms_per_example",
)
PARAMS = "training.trainable_params"

# method: (peak training memory GiB, held-out accuracy, held-out brier score, latency ms); two
# entries for two seeds. lora's seeds average to ia3's accuracy at more memory: off the front,
# though its first seed alone would be on it.
KNOWN = {
    "base": [(None, 0.43, 0.40, 10.0)],
    "full": [(2.5, 0.55, 0.10, 15.0)],
    "dora": [(2.0, 0.60, 0.22, 20.0)],
    "ia3": [(1.0, 0.50, 0.20, 12.0)],
    "lora": [(1.5, 0.70, 0.25, 11.0), (1.5, 0.30, 0.25, 11.0)],
    "qlora": [(0.5, 0.40, 0.30, 30.0)],
}


def _known_records() -> list[dict[str, Any]]:
    records = []
    for method, seeds in KNOWN.items():
        for seed, (memory, accuracy, brier, latency) in enumerate(seeds):
            blocks: dict[str, Any] = {"inference": {"latency_ms_per_example": latency}}
            if memory is not None:
                blocks["training"] = {"peak_memory_bytes": int(memory * GIB)}
            held = {"accuracy": accuracy, "brier_score": brier}
            records.append(make_record(method, "arc_easy", seed=seed, held_out=held, **blocks))
    # A failed case that still carries numbers which would put full on every front: never counted.
    failed = make_record("full", "arc_easy", seed=1, status="failed", reason="loss diverged at step 3")
    failed["metrics"] = {"held_out": {"accuracy": 0.99, "brier_score": 0.01}, "seen": {}}
    failed["training"] = {"peak_memory_bytes": int(0.1 * GIB), "trainable_params": 1}
    failed["inference"] = {"latency_ms_per_example": 1.0}
    # A metric no one declared a direction for: on the y axis, but with no front.
    records[0]["metrics"]["held_out"]["my_score"] = 1.0
    return [*records, failed]


@pytest.fixture(scope="module")
def known() -> dict[str, Any]:
    data = explorer_data(records_frame(_known_records()))
    assert len(data["groups"]) == 1
    return data


def test_the_front_is_computed_in_each_quantitys_direction(known: dict[str, Any]) -> None:
    fronts = known["groups"][0]["fronts"]
    assert fronts[f"{MEMORY}|held_out.accuracy"] == ["qlora", "ia3", "dora"]  # accuracy: higher is better
    assert fronts[f"{MEMORY}|held_out.brier_score"] == ["qlora", "ia3", "full"]  # brier: lower is better
    # The untrained base has a latency, so it competes there; lora's mean ties ia3 at lower latency.
    assert fronts[f"{LATENCY}|held_out.accuracy"] == ["base", "lora", "full", "dora"]
    assert f"{MEMORY}|held_out.my_score" not in fronts
    assert "held_out.my_score" in known["groups"][0]["y_columns"]
    axes = known["y_axes"]
    assert axes["held_out.brier_score"]["higher_is_better"] is False
    assert axes["held_out.brier_score"]["title"] == "held-out brier_score (lower is better)"
    assert axes["held_out.my_score"]["higher_is_better"] is None


def test_points_are_means_over_finished_seeds(known: dict[str, Any]) -> None:
    points = {p["method"]: p for p in known["groups"][0]["points"]}
    assert list(points) == ["base", "full", "dora", "ia3", "lora", "qlora"]  # the tables' order
    lora = points["lora"]
    assert lora["seeds"] == 2 and lora["mean"]["held_out.accuracy"] == pytest.approx(0.5)
    assert lora["std"]["held_out.accuracy"] == pytest.approx(math.sqrt(0.08))
    full = points["full"]  # its failed seed is left out
    assert full["case_ids"] == ["full-smollm2-135m-arc_easy-seed0"]
    assert full["mean"][MEMORY] == 2.5 * GIB and full["mean"]["held_out.accuracy"] == 0.55
    assert "std" not in full or "held_out.accuracy" not in full["std"]
    assert points["base"]["trains"] is False and MEMORY not in points["base"]["mean"]
    assert points["ia3"]["trains"] is True
    assert "lora-smollm2-135m-arc_easy-seed1" in lora["hover"]
    assert "peak training memory: 1.50 GiB" in lora["hover"]
    assert "held-out accuracy: 0.500 ± 0.283" in lora["hover"]
    assert "mean ± std over 2 seeds" in lora["hover"]


def test_two_way_front_with_an_x_where_higher_is_better() -> None:
    points = [("a", 100.0, 0.5), ("b", 200.0, 0.4), ("c", 150.0, 0.6), ("d", 50.0, 0.7)]
    assert two_way_front(points, x_higher_is_better=True, y_higher_is_better=True) == ["d", "c", "b"]
    assert two_way_front(points, x_higher_is_better=False, y_higher_is_better=True) == ["d"]
    assert two_way_front(points, x_higher_is_better=True, y_higher_is_better=False) == ["b"]


def test_nothing_finished_gives_no_groups_and_no_plot(tmp_path: Path) -> None:
    records = [make_record("lora", "squad", status="oom")]
    assert explorer_data(records_frame(records))["groups"] == []
    out = write_report([write_run(tmp_path / "runs", "r", records)], tmp_path / "report")
    page = (out / "report.html").read_text()
    assert "No finished case to compare." in page and "plotly.js v" not in page  # no 4.8 MB for nothing


# --------------------------------------------------------------------------- the page


RUN_ID = "20260101-120000-quick"


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A report of two seeds over three tasks (one of them with a lower-is-better metric), and
    what the page is expected to embed."""
    root = tmp_path_factory.mktemp("explorer")
    records = grid(tasks=("arc_easy", "squad", "lambada"), seeds=(0, 1), run_id=RUN_ID)
    out = write_report([write_run(root / "runs", RUN_ID, records)], root / "report")
    return out / "report.html", explorer_data(records_frame(records), records)


def _embedded(text: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="explore-data">(.*?)</script>', text, re.S)
    assert match
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def test_the_page_embeds_the_data_and_plotly_and_fetches_nothing(page: tuple[Path, dict[str, Any]]) -> None:
    path, expected = page
    text = path.read_text()
    embedded = _embedded(text)
    assert {k: embedded[k] for k in expected} == json.loads(json.dumps(expected))
    assert "plotly.js v" in text  # the bundle's own banner: inlined, not linked
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=[\"']?(https?:)?//", text)
    assert re.search(r'<a href="#explore">Compare interactively</a>', text)


# Drives the page as a reader would: reads what plotly drew, hovers the first point, picks another
# x axis, then another task, and writes each state onto <body> for --dump-dom to return.
_DRIVER = """
<script>
window.addEventListener("load", function () {
  var plot = document.getElementById("explore-plot"), states = [];
  function state() {
    var drawn = plot.querySelectorAll(".scatterlayer .trace:first-child .point");
    return {
      plotly: typeof Plotly, names: plot.data[0].text, x: plot.data[0].x, y: plot.data[0].y,
      front_x: plot.data[1].x, front_y: plot.data[1].y, base_y: plot.data[2].y || [],
      x_title: plot.layout.xaxis.title.text, y_title: plot.layout.yaxis.title.text,
      x_type: plot.layout.xaxis.type, drawn: drawn.length,
      error_y: plot.data[0].error_y.array, opacity: plot.data[0].marker.opacity,
      bars: plot.querySelectorAll(".scatterlayer .trace:first-child .errorbar").length,
      note: document.getElementById("explore-note").textContent,
      hover: (plot.querySelector(".hoverlayer") || {}).textContent || "",
      at: Array.prototype.map.call(drawn, function (p) { return p.getAttribute("transform"); }),
      y_options: Array.prototype.map.call(document.getElementById("explore-y").options,
                                          function (o) { return o.value; })
    };
  }
  function choose(id, value) {
    var select = document.getElementById(id);
    select.value = value;
    select.dispatchEvent(new Event("change"));
  }
  var steps = [
    function () { Plotly.Fx.hover(plot, [{curveNumber: 0, pointNumber: 0}]); },
    function () { Plotly.Fx.unhover(plot); choose("explore-x", "training.train_seconds"); },
    function () { choose("explore-task", "lambada"); },
  ];
  function next() {
    states.push(state());
    var step = steps.shift();
    if (step) { step(); setTimeout(next, 200); }
    else { document.body.setAttribute("data-explore-states", JSON.stringify(states)); }
  }
  setTimeout(next, 200);
});
</script>
"""


def _expected(data: dict[str, Any], task: str, x: str, y: str) -> dict[str, Any]:
    group = next(g for g in data["groups"] if g["task"] == task)
    scale = next(a["scale"] for a in data["x_axes"] if a["column"] == x)
    shown = [p for p in group["points"] if x in p["mean"] and y in p["mean"]]
    by_method = {p["method"]: p for p in shown}
    front = group["fronts"][f"{x}|{y}"]
    return {
        "names": [p["method"] for p in shown],
        "x": [p["mean"][x] / scale for p in shown],
        "y": [p["mean"][y] for p in shown],
        "front_x": [by_method[m]["mean"][x] / scale for m in front],
        "front_y": [by_method[m]["mean"][y] for m in front],
        "base_y": [p["mean"][y] for p in group["points"] if not p["trains"]] * 2,
        "y_options": group["y_columns"],
        # the 95% interval's half-width where the records kept one, else the spread over seeds
        "error_y": [p["ci"].get(y, p["std"].get(y, 0)) for p in shown],
    }


def _same(state: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        if key in ("names", "y_options"):
            assert state[key] == value, key
        else:
            assert state[key] == pytest.approx(value), key


def _drive(page: Path, tmp_path: Path) -> list[dict[str, Any]]:
    """The states _DRIVER writes onto <body>, from headless Chromium with the network blocked."""
    driven = tmp_path / "report.html"
    driven.write_text(page.read_text().replace("</body>", _DRIVER + "</body>"))
    browser = chromium()
    assert browser is not None
    offline = ["--proxy-server=http://127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND"]
    result = subprocess.run(
        [
            *(browser, *chromium_flags(tmp_path / "profile"), *offline),
            *("--enable-logging=stderr", "--virtual-time-budget=10000", "--dump-dom", driven.as_uri()),
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    body = re.search(r'data-explore-states="([^"]*)"', result.stdout)
    assert body, result.stdout[-1000:]
    states: list[dict[str, Any]] = json.loads(html.unescape(body.group(1)))
    return states


def test_choosing_an_axis_and_a_task_redraws_the_plot_offline(
    page: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    path, data = page
    first, hovered, by_time, lambada = _drive(path, tmp_path)
    assert first["plotly"] == "object"
    _same(first, _expected(data, "arc_easy", MEMORY, "held_out.accuracy"))
    assert first["drawn"] == len(first["names"]) == 5  # the trained methods, as SVG points
    assert first["bars"] == 5 and first["opacity"] == [1] * 5  # no per-example scores: nothing faded
    assert first["x_title"] == "peak training memory (GiB) (lower is better)"
    assert first["y_title"] == "held-out accuracy (higher is better)"
    assert first["hover"] == ""
    # The tooltip of the first point (full): its cases and figures, as the embedded hover text says.
    full = next(p for p in data["groups"][0]["points"] if p["method"] == first["names"][0])
    assert "full-smollm2-135m-arc_easy-seed1" in hovered["hover"]
    assert "peak training memory: 2.3" in hovered["hover"] and "held-out accuracy: 0.49" in hovered["hover"]
    assert hovered["hover"] == html.unescape(re.sub(r"<[^>]+>", "", full["hover"]))

    _same(by_time, _expected(data, "arc_easy", SECONDS, "held_out.accuracy"))
    assert by_time["x_title"].startswith("training time (s)")
    assert by_time["drawn"] == 5 and by_time["at"] != first["at"]  # the points moved on screen

    _same(lambada, _expected(data, "lambada", SECONDS, "held_out.perplexity"))
    assert lambada["y_title"] == "held-out perplexity (lower is better)"
    assert lambada["front_x"] != by_time["front_x"]


def test_interval_bars_and_faded_methods_are_drawn(tmp_path: Path) -> None:
    """Scored records: the bars are the 95% intervals, and ia3, which a paired test cannot tell
    from lora (the best), is faded; dora, clearly behind, is not."""
    right = {"lora": (0, 60), "ia3": (3, 61), "dora": (0, 45), "base": (0, 40)}
    records = [
        scored(make_record(m, "arc_easy"), {"accuracy": [1.0 if a <= i < b else 0.0 for i in range(100)]})
        for m, (a, b) in right.items()
    ]
    records += [make_record(m, "lambada") for m in ("base", "lora")]  # for the driver's last step; unscored
    out = write_report([write_run(tmp_path / "runs", RUN_ID, records)], tmp_path / "report")
    data = explorer_data(records_frame(records), records)
    first = _drive(out / "report.html", tmp_path)[0]
    _same(first, _expected(data, "arc_easy", MEMORY, "held_out.accuracy"))
    widths = {r["method"]: r["uncertainty"]["held_out"]["accuracy"] for r in records if "uncertainty" in r}
    assert first["error_y"] == pytest.approx(
        [(widths[m]["ci_high"] - widths[m]["ci_low"]) / 2 for m in first["names"]]
    )
    assert first["bars"] == 3
    assert dict(zip(first["names"], first["opacity"], strict=True)) == {"dora": 1, "ia3": 0.3, "lora": 1}
    assert "Faded: ia3, which a paired test over the examples cannot tell from the best" in first["note"]
