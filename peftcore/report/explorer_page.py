"""report.html's interactive comparison as a page section: the selectors, the plot, the embedded
data of :func:`peftcore.report.explorer.explorer_data`, plotly.js and a short script.

:func:`explorer_html` renders it with plotly: plotly.js (its offline bundle, from the ``plotly``
package) is inlined, so the page fetches nothing. plotly's own dropdowns (``updatemenus``) each
apply one fixed change, but here the points depend on model and task together and the front on x
and y together, so four ``<select>`` elements and a short script pick the embedded data and hand it
to ``Plotly.react``; no number is computed in the browser.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping
from typing import Any

from peftcore.report.canvas import BASE_COLOR

__all__ = ["LEAD", "explorer_html"]


# The selectors: which embedded points and front to show. Kept to what plotly cannot do itself
# (see the module's docstring); the figure's look comes from the Python-built template.
_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("explore-data").textContent);
  var plot = document.getElementById("explore-plot");
  var pick = {};
  ["model", "task", "x", "y"].forEach(function (k) { pick[k] = document.getElementById("explore-" + k); });
  var note = document.getElementById("explore-note");
  function copy(o) { return JSON.parse(JSON.stringify(o)); }
  function options(select, values, labels, keep) {
    select.innerHTML = "";
    values.forEach(function (v, i) {
      var o = document.createElement("option"); o.value = v; o.textContent = labels[i]; select.appendChild(o);
    });
    if (keep !== null && values.indexOf(keep) >= 0) { select.value = keep; }
  }
  function group() {
    return data.groups.filter(function (g) {
      return g.model === pick.model.value && g.task === pick.task.value;
    })[0];
  }
  function fillTasks() {
    var tasks = data.groups.filter(function (g) { return g.model === pick.model.value; })
      .map(function (g) { return g.task; });
    options(pick.task, tasks, tasks, pick.task.value);
  }
  function fillY() {
    var g = group(), keep = pick.y.value;
    options(pick.y, g.y_columns, g.y_columns.map(function (c) { return data.y_axes[c].words; }),
            g.y_columns.indexOf(keep) >= 0 ? keep : g.primary);
  }
  function render() {
    var g = group(), x = pick.x.value, y = pick.y.value;
    if (!g || !(y in data.y_axes)) { note.textContent = "No finished case of this model and task."; return; }
    var xAxis = data.x_axes.filter(function (a) { return a.column === x; })[0];
    var shown = g.points.filter(function (p) { return x in p.mean && y in p.mean; });
    var front = g.fronts[x + "|" + y] || [];
    var at = function (p) { return p.mean[x] / xAxis.scale; };
    var traces = copy(data.figure.data), layout = copy(data.figure.layout);
    var dots = traces[0], line = traces[1], base = traces[2];
    dots.x = shown.map(at);
    dots.y = shown.map(function (p) { return p.mean[y]; });
    dots.text = shown.map(function (p) { return p.method; });
    dots.hovertext = shown.map(function (p) { return p.hover; });
    dots.error_x.array = shown.map(function (p) { return (p.std[x] || 0) / xAxis.scale; });
    // The bar is the score's 95% interval over the examples; the spread over seeds where none was kept.
    dots.error_y.array = shown.map(function (p) { return y in p.ci ? p.ci[y] : (p.std[y] || 0); });
    dots.marker.color = shown.map(function (p) { return p.color; });
    var tied = g.indistinct[y] || [];
    var faded = function (p) { return tied.indexOf(p.method) >= 0; };
    dots.marker.opacity = shown.map(function (p) { return faded(p) ? 0.3 : 1; });
    dots.textfont.color = shown.map(function (p) { return faded(p) ? "#aaa" : "#222"; });
    var onFront = function (p) { return front.indexOf(p.method) >= 0; };
    dots.marker.size = shown.map(function (p) { return onFront(p) ? 13 : 9; });
    dots.marker.line.color = shown.map(function (p) { return onFront(p) ? "#222" : "#fff"; });
    var byMethod = {};
    shown.forEach(function (p) { byMethod[p.method] = p; });
    line.x = front.map(function (m) { return at(byMethod[m]); });
    line.y = front.map(function (m) { return byMethod[m].mean[y]; });
    // The untrained base has no training figures: drawn as its level of y across the plot.
    var untrained = g.points.filter(function (p) { return !p.trains && !(x in p.mean) && y in p.mean; })[0];
    if (untrained && shown.length) {
      var xs = dots.x.slice().sort(function (a, b) { return a - b; });
      base.x = [xs[0], xs[xs.length - 1]];
      base.y = [untrained.mean[y], untrained.mean[y]];
      base.name = untrained.method + " (no training)";
    }
    layout.xaxis.title.text = xAxis.title;
    layout.xaxis.type = xAxis.log ? "log" : "linear";
    layout.yaxis.title.text = data.y_axes[y].title;
    note.textContent = !shown.length ? "No finished case of this model and task has both figures."
      : data.y_axes[y].higher_is_better === null ? "This metric declares no direction, so there is no front."
      : "Dashed: the Pareto front (" + front.join(", ") + "), methods no other beats on both axes."
        + (tied.length ? " Faded: " + tied.join(", ") + ", which a paired test over the examples cannot "
           + "tell from the best on this score (Holm-corrected, p ≥ 0.05)." : "");
    Plotly.react(plot, traces, layout, data.figure.config);
  }
  pick.model.addEventListener("change", function () { fillTasks(); fillY(); render(); });
  pick.task.addEventListener("change", function () { fillY(); render(); });
  pick.x.addEventListener("change", render);
  pick.y.addEventListener("change", render);
  fillTasks(); fillY(); render();
})();
"""

LEAD = (
    "Pick a model and task, the cost on the x axis and a score on the y axis. Each point is a method "
    "(mean over its seeds; hover for the case and every figure). Vertical bars: the score's 95% "
    "confidence interval over the examples it was scored on (± one standard deviation over seeds where "
    "no interval was recorded); horizontal bars: ± one standard deviation over seeds. Faded points: "
    "methods a paired test cannot tell from the best on that score. The dashed line joins the Pareto "
    "front in both quantities' directions; the dotted line is the untrained base model. The static "
    "plots below show the same data without JavaScript."
)


def _figure() -> dict[str, Any]:
    """The plot's traces (points, front, base level) and layout, without data: the script fills it."""
    import plotly.graph_objects as go
    import plotly.io as pio

    fig = go.Figure(
        [
            go.Scatter(
                name="method",
                mode="markers+text",
                textposition="top right",
                textfont={"size": 11},
                hovertemplate="%{hovertext}<extra></extra>",
                marker={"size": 9, "line": {"width": 1.5, "color": "#fff"}},
                error_x={"type": "data", "array": [], "thickness": 1, "width": 3, "color": "#999"},
                error_y={"type": "data", "array": [], "thickness": 1, "width": 3, "color": "#999"},
                showlegend=False,
            ),
            go.Scatter(
                name="Pareto front",
                mode="lines",
                line={"dash": "dash", "color": "#333", "width": 1.3},
                hoverinfo="skip",
            ),
            go.Scatter(
                name="base (no training)",
                mode="lines",
                line={"dash": "dot", "color": BASE_COLOR, "width": 1.6},
                hoverinfo="skip",
            ),
        ]
    )
    fig.update_layout(
        template="simple_white",
        height=540,
        margin={"l": 70, "r": 30, "t": 20, "b": 60},
        xaxis={"title": {"text": ""}, "showgrid": True, "gridcolor": "#eee"},
        yaxis={"title": {"text": ""}, "showgrid": True, "gridcolor": "#eee"},
        legend={"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
        hoverlabel={"align": "left"},
    )
    figure: dict[str, Any] = json.loads(pio.to_json(fig))
    figure["config"] = {"displaylogo": False, "responsive": True}
    return figure


def _script_json(value: Any) -> str:
    """JSON that is safe inside ``<script>``: no ``</script>`` or ``<!--`` can appear in it."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def explorer_html(data: Mapping[str, Any]) -> str:
    """The page's section body for :func:`explorer_data`'s ``data``: the selectors, the plot, the
    embedded data, plotly.js and the script. Without a group to show, one sentence and no script."""
    if not data["groups"]:
        return '<p class="muted">No finished case to compare.</p>'
    from plotly.offline import get_plotlyjs

    e = html.escape
    first = data["groups"][0]
    models = list(dict.fromkeys(g["model"] for g in data["groups"]))
    model_options = "".join(
        f'<option value="{e(m)}"{" selected" if m == first["model"] else ""}>{e(m)}</option>' for m in models
    )
    x_options = "".join(f'<option value="{e(a["column"])}">{e(a["words"])}</option>' for a in data["x_axes"])
    controls = (
        '<div class="explore-controls">'
        f'<label>Model <select id="explore-model">{model_options}</select></label>'
        '<label>Task <select id="explore-task"></select></label>'
        f'<label>x <select id="explore-x">{x_options}</select></label>'
        '<label>y <select id="explore-y"></select></label>'
        "</div>"
    )
    payload = {**data, "figure": _figure()}
    return "\n".join(
        [
            controls,
            '<noscript><p class="muted">The interactive comparison needs JavaScript; the plots below '
            "show the same data.</p></noscript>",
            '<div id="explore-plot" class="explore-plot"></div>',
            '<p id="explore-note" class="muted"></p>',
            f'<script type="application/json" id="explore-data">{_script_json(payload)}</script>',
            f"<script>{get_plotlyjs()}</script>",
            f"<script>{_SCRIPT}</script>",
        ]
    )
