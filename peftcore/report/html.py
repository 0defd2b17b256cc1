"""The report as one self-contained HTML page: styles, scripts, plots (PNG) and plotly.js embedded.

Nothing on the page is fetched, so the file can be mailed, attached to CI or opened offline.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping, Sequence
from typing import Any

from peftcore.gates.baseline import ComparisonResult
from peftcore.report.certainty import INTERVAL_NOTE
from peftcore.report.comparison import COMPARISON_LEAD, Table, comparison_parts
from peftcore.report.deploy import HEADER as DEPLOY_HEADER
from peftcore.report.deploy import LEAD as DEPLOY_LEAD
from peftcore.report.deploy import DeployTable, deploy_tables
from peftcore.report.explorer_page import LEAD as EXPLORER_LEAD
from peftcore.report.facts import (
    MISSING_LEAD,
    failed_records,
    missing_cases,
    reason_line,
    run_facts,
    unreadable,
)
from peftcore.report.formats import DASH
from peftcore.report.off_task import LEAD as OFF_TASK_LEAD
from peftcore.report.off_task import OffTaskTable, off_task_tables
from peftcore.report.plots import Plot, deploy_plot_id
from peftcore.report.rows import SEEDS_NOTE, group_rows
from peftcore.report.summary import GroupSummary, best_method, shows_intervals, summarize
from peftcore.report.tuning import LEAD as TUNING_LEAD
from peftcore.report.tuning import TuningTable, tuning_tables
from peftcore.results.store import Run

_CSS = """
:root { --ink: #1f2328; --muted: #656d76; --line: #d8dee4; --soft: #f6f8fa; --good: #1a7f37; --bad: #cf222e; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, "Segoe UI", Roboto, sans-serif; color: var(--ink); }
main { max-width: 1400px; margin: 0 auto; padding: 28px 32px 60px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 40px 0 8px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
h3 { font-size: 16px; margin: 26px 0 6px; }
p.lead, .muted { color: var(--muted); }
nav { margin: 14px 0 6px; font-size: 14px; }
nav a { margin-right: 14px; color: #0969da; text-decoration: none; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 16px 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr)); gap: 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; background: var(--soft); }
.card h3 { margin: 0 0 6px; }
.card ul { margin: 0; padding-left: 18px; font-size: 14px; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); gap: 18px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; display: block; }
.table-wrap { overflow-x: auto; }
table { border-collapse: collapse; font-size: 13.5px; margin: 8px 0 4px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { text-align: left; background: var(--soft); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.best { font-weight: 700; }
span.sd { color: var(--muted); font-size: 12px; }
p.caption { font-size: 13.5px; margin: 14px 0 0; }
tr.base td { color: var(--muted); }
span.front { color: #8250df; font-weight: 700; margin-left: 4px; }
.status { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; font-weight: 600;
          background: #ffebe9; color: var(--bad); }
td.reason { white-space: normal; max-width: 720px; font-family: ui-monospace, monospace; font-size: 12.5px; }
td.better { color: var(--good); } td.worse { color: var(--bad); }
ul.problems { font-family: ui-monospace, monospace; font-size: 13px; }
.explore-controls { display: flex; flex-wrap: wrap; gap: 8px 18px; margin: 10px 0; font-size: 14px; }
.explore-controls select { margin-left: 6px; font: inherit; max-width: 420px; }
.explore-plot { border: 1px solid var(--line); border-radius: 8px; min-height: 540px; }
footer { margin-top: 48px; font-size: 12.5px; color: var(--muted); }
"""

# Marks the page once every image has decoded, so a headless browser (and a test) can tell that
# each plot rendered: data-plots-ok="true" and data-plot-count on <body>.
_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (img) { return img.complete && img.naturalWidth > 0; });
  document.body.setAttribute("data-plot-count", String(imgs.length));
  document.body.setAttribute("data-plots-ok", ok ? "true" : "false");
});
"""


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _figure_html(plot: Plot, wide: bool = False) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    cls = ' class="wide"' if wide else ""
    return (
        f'<figure{cls}><img id="{_e(plot.id)}" alt="{_e(plot.alt)}" src="data:image/png;base64,{data}">'
        "</figure>"
    )


def _value_html(text: str) -> str:
    """``0.480 ± 0.007 (CI ± 0.098)`` with what follows the mean set smaller (deviation, interval),
    so the means line up and read first; a unit after them keeps the mean's size."""
    match = re.fullmatch(r"(\S+)((?: ± \S+)?(?: \(CI ± \S+\))?)(.*)", text)
    if not match or not match.group(2):
        return _e(text)
    mean, spread, unit = (_e(g) for g in match.groups())
    return f'{mean}<span class="sd">{spread}</span>{unit}'


def _num_class(column: int) -> str:
    return "" if column == 0 else " class=num"  # the first column names, the others are numbers


def _deploy_html(tables: Sequence[DeployTable], plots: Sequence[Plot]) -> str:
    """The deployment section: per (model, task), the plot of its variants and their table."""
    by_id = {p.id: p for p in plots}
    out = [f'<section id="deploy"><h2>Deployment variants</h2><p class="lead">{_e(DEPLOY_LEAD)}</p>']
    for table in tables:
        out.append(f"<h3>{_e(table.title)}</h3>")
        plot = by_id.get(deploy_plot_id(table))
        if plot is not None:
            out.append('<div class="plots">' + _figure_html(plot, wide=True) + "</div>")
        head = "".join(f"<th{_num_class(i)}>{_e(h)}</th>" for i, h in enumerate(DEPLOY_HEADER))
        body = "".join(
            "<tr>" + "".join(f"<td{_num_class(i)}>{_e(c)}</td>" for i, c in enumerate(row)) + "</tr>"
            for row in table.rows
        )
        out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        if table.notes:
            out.append('<ul class="problems">' + "".join(f"<li>{_e(n)}</li>" for n in table.notes) + "</ul>")
    out.append("</section>")
    return "".join(out)


def _table_html(group: GroupSummary) -> str:
    rows, columns, front, show_seeds = group.rows, group.columns, group.front, group.seeds_column
    # Bold marks the best held-out score and the cheapest training; a high *seen* score is no virtue,
    # and a small trainable-parameter count is what a method is, not a result.
    best = {
        c.header: best_method(rows, c.quantity)
        for c in columns
        if c.quantity.block in ("held_out", "training") and c.quantity.name != "trainable_params"
    }
    head = "<th>Method</th>" + ("<th class=num>Seeds</th>" if show_seeds else "")
    head += "".join(f"<th class=num>{_e(c.header).replace(' ', '<br>', 1)}</th>" for c in columns)
    body = []
    for row in rows:
        mark = (
            '<span class="front" title="on the quality/memory Pareto front">◆</span>'
            if row.method in front
            else ""
        )
        cells = [f"<td>{_e(row.method)}{mark}</td>"]
        if show_seeds:
            cells.append(f"<td class=num>{len(row.records)}</td>")
        for c in columns:
            cls = "num best" if best.get(c.header) == row.method else "num"
            cells.append(f'<td class="{cls}">{_value_html(c.render(row))}</td>')
        tr_cls = ' class="base"' if not row.trains else ""
        body.append(f"<tr{tr_cls}>{''.join(cells)}</tr>")
    return _wrap_table(head, body)


def _off_task_html(tables: Sequence[OffTaskTable], plots: Sequence[Plot]) -> str:
    """The section on scores outside the task: a table per training task, then the plots."""
    out = ['<section id="off-task"><h2>Beyond the task</h2>', f'<p class="lead">{_e(OFF_TASK_LEAD)}</p>']
    for table in tables:
        out += [f"<h3>{_e(table.title)}</h3>", f'<p class="muted">{_e(table.note)}</p>']
        head = "".join(
            f"<th{' class=num' if r else ''}>{_e(h)}</th>"
            for h, r in zip(table.header, table.right, strict=True)
        )
        body = [
            f"<tr{' class=base' if base else ''}>"
            + "".join(
                f"<td{' class=num' if r else ''}>{_e(c)}</td>"
                for c, r in zip(cells, table.right, strict=True)
            )
            + "</tr>"
            for cells, base in zip(table.rows, table.base_rows, strict=True)
        ]
        out.append(_wrap_table(head, body))
    if plots:
        out.append('<div class="plots">' + "".join(_figure_html(p) for p in plots) + "</div>")
    return "\n".join([*out, "</section>"])


def _tuning_html(tables: Sequence[TuningTable], plots: Sequence[Plot]) -> str:
    """The search's section: per (model, task), the plot of its trials, the table, why each
    value was chosen."""
    by_id = {p.id: p for p in plots}
    out = ['<section id="tuning"><h2>Tuning</h2>', f'<p class="lead">{_e(TUNING_LEAD)}</p>']
    for table in tables:
        out += [f"<h3>{_e(table.title)}</h3>", f'<p class="muted">{_e(table.note)}</p>']
        plot = by_id.get(table.plot_id)
        if plot is not None:
            out.append('<div class="plots">' + _figure_html(plot, wide=True) + "</div>")
        head = "".join(
            f"<th{' class=num' if r else ''}>{_e(h)}</th>"
            for h, r in zip(table.header, table.right, strict=True)
        )
        body = [
            "<tr>"
            + "".join(
                f"<td{' class=num' if r else ''}>{_value_html(c) if r else _e(c)}</td>"
                for c, r in zip(cells, table.right, strict=True)
            )
            + "</tr>"
            for cells in table.rows
        ]
        out.append(_wrap_table(head, body))
        if table.notes:
            out.append("<ul>" + "".join(f"<li>{_e(note)}</li>" for note in table.notes) + "</ul>")
    return "\n".join([*out, "</section>"])


def _html_table(table: Table) -> str:
    head = "".join(
        f"<th{' class=num' if r else ''}>{_e(h)}</th>" for h, r in zip(table.header, table.right, strict=True)
    )
    body = []
    for row in table.rows:
        cells = []
        for text, right in zip(row, table.right, strict=True):
            classes = ["num"] if right else []
            if "▲" in text:
                classes.append("better")
            elif "▼" in text:
                classes.append("worse")
            cls = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{cls}>{_e(text)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return _wrap_table(head, body)


def _wrap_table(head: str, body: Sequence[str]) -> str:
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="table-wrap">{table}</div>'


def _comparison_html(reference: Run, current: Run, result: ComparisonResult) -> str:
    facts, headline, detail = comparison_parts(reference, current, result)
    lead = COMPARISON_LEAD.format(new=current.run_id, old=reference.run_id)
    parts = [
        '<section id="comparison">',
        f"<h2>Comparison with {_e(reference.run_id)}</h2>",
        f'<p class="lead">{_e(lead)}</p>',
        "<ul>" + "".join(f"<li>{_e(fact)}</li>" for fact in facts) + "</ul>",
        "<h3>Per case</h3>",
        _html_table(headline),
        "<h3>Every value that changed</h3>",
        _html_table(detail) if detail.rows else '<p class="muted">Nothing changed.</p>',
        "</section>",
    ]
    return "\n".join(parts)


def report_html(
    run: Run,
    plots: Mapping[str, Sequence[Plot]],
    reference: Run | None = None,
    comparison: ComparisonResult | None = None,
    explorer: str = "",
) -> str:
    """report.html of ``run``: facts, highlights, the interactive comparison (``explorer``, from
    :func:`~peftcore.report.explorer_page.explorer_html`; left out when empty), the ``plots`` by section
    (those of :func:`~peftcore.report.plots.draw_plots`), tables, failed cases, unreadable record
    files and, given a reference run and the comparison, that section."""
    summaries = summarize(group_rows(run.records))
    failed = failed_records(run.records)
    off_task = off_task_tables(group_rows(run.records))  # none unless the profile asked for them
    deployed = deploy_tables(run.records)  # none unless the profile has a deploy: block
    tuned = tuning_tables(run)  # none unless the profile has a tune: block
    sections = [
        ("highlights", "Highlights"),
        *([("explore", "Compare interactively")] if explorer else []),
        ("pareto", "Quality vs memory"),
        ("cost", "Cost"),
        ("loss", "Loss curves"),
        ("generalization", "Held-out vs seen"),
        *([("off-task", "Beyond the task")] if off_task else []),
        *([("deploy", "Deployment variants")] if deployed else []),
        *([("tuning", "Tuning")] if tuned else []),
        ("tables", "Tables"),
    ]
    if failed:
        sections.append(("failed", "Failed cases"))
    missing = missing_cases(run)
    if missing:
        sections.append(("missing", "Missing cases"))
    problems = unreadable(run, reference)
    if problems:
        sections.append(("problems", "Unreadable records"))
    if comparison is not None:
        sections.append(("comparison", "Comparison"))
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>peftcore report · {_e(run.run_id)}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_CHECK_SCRIPT}</script>",
        "</head><body><main>",
        "<h1>peftcore report</h1>",
        f'<p class="lead">Parameter-efficient fine-tuning benchmark, run <b>{_e(run.run_id)}</b>'
        + (f", compared with <b>{_e(reference.run_id)}</b>" if reference else "")
        + "</p>",
        "<nav>" + "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title in sections) + "</nav>",
        '<dl class="facts">'
        + "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in run_facts(run))
        + "</dl>",
    ]
    if any(group.seeds_column for group in summaries):
        out.append(f'<p class="muted">{_e(SEEDS_NOTE)}</p>')
    if shows_intervals(summaries):
        out.append(f'<p class="muted">{_e(INTERVAL_NOTE)}</p>')
    out.append('<section id="highlights"><h2>Highlights</h2><div class="cards">')
    for group in summaries:
        if group.highlights:
            items = "".join(f"<li>{_e(n)}</li>" for n in group.highlights)
            out.append(f'<div class="card"><h3>{_e(group.title)}</h3><ul>{items}</ul></div>')
    out.append("</div></section>")
    if explorer:
        out.append('<section id="explore"><h2>Compare interactively</h2>')
        out.append(f'<p class="lead">{_e(EXPLORER_LEAD)}</p>{explorer}</section>')
    captions = {
        "pareto": (
            "Quality vs peak training memory",
            "Each point is a method (mean over seeds, bars ± one standard deviation). The dashed line joins "
            "the Pareto front: methods no other method beats on both memory and quality. The dotted line is "
            "the untrained base model.",
        ),
        "cost": ("Cost", "Training time per method and task, and the size of what each method saves."),
        "loss": (
            "Loss curves",
            "Training loss per logged step; with several seeds, their mean and (shaded) their range.",
        ),
        "generalization": (
            "Held-out vs seen",
            "The primary metric on held-out examples (never trained on, solid) and on a sample of the "
            "training examples (hatched). A large gap means memorizing rather than learning the task.",
        ),
    }
    for sid, (title, caption) in captions.items():
        out.append(f'<section id="{sid}"><h2>{_e(title)}</h2><p class="lead">{_e(caption)}</p>')
        section_plots = plots.get(sid, [])
        if section_plots:
            wide = sid in ("loss", "generalization")
            out.append(
                '<div class="plots">' + "".join(_figure_html(p, wide) for p in section_plots) + "</div>"
            )
        else:
            out.append('<p class="muted">No finished case has the data for this plot.</p>')
        out.append("</section>")
    if off_task:
        out.append(_off_task_html(off_task, plots.get("off_task", [])))
    if deployed:
        out.append(_deploy_html(deployed, plots.get("deploy", [])))
    if tuned:
        out.append(_tuning_html(tuned, plots.get("tuning", [])))
    out.append('<section id="tables"><h2>Tables</h2>')
    out.append(
        '<p class="lead">Bold: the best value of the column. ◆: on the quality/memory Pareto front. '
        f"{DASH}: not measured (the base model does not train).</p>"
    )
    for group in summaries:
        out.append(f"<h3>{_e(group.title)}</h3>")
        if group.note:
            out.append(f'<p class="muted">{_e(group.note)}</p>')
        out.append(_table_html(group))
        out.extend(f'<p class="muted">{_e(note)}</p>' for note in group.notes)
        if group.comparison is not None:
            caption, table = group.comparison
            out.append(f'<p class="caption"><b>Paired comparisons.</b> {_e(caption)}</p>')
            out.append(_html_table(table))
    out.append("</section>")
    if failed:
        out.append('<section id="failed"><h2>Failed cases</h2>')
        out.append(
            '<p class="lead">Cases that did not finish; they have no numbers and are left out above.</p>'
        )
        out.append("<table><thead><tr><th>Case</th><th>Status</th><th>Reason</th></tr></thead><tbody>")
        for r in failed:
            out.append(
                f"<tr><td>{_e(r['case_id'])}</td><td><span class=status>{_e(r['status'])}</span></td>"
                f'<td class="reason" title="{_e(r.get("reason") or "")}">{_e(reason_line(r))}</td></tr>'
            )
        out.append("</tbody></table></section>")
    if missing:
        lead = MISSING_LEAD.format(n=len(run.grid.missing) if run.grid else 0)
        out.append(
            f'<section id="missing"><h2>Missing cases</h2><p class="lead">{_e(lead)}</p><ul class="problems">'
        )
        out.extend(f"<li>{_e(line)}</li>" for line in missing)
        out.append("</ul></section>")
    if problems:
        out.append('<section id="problems"><h2>Record files that could not be read</h2><ul class="problems">')
        out.extend(f"<li>{_e(p)}</li>" for p in problems)
        out.append("</ul></section>")
    if reference is not None and comparison is not None:
        out.append(_comparison_html(reference, run, comparison))
    out.append(
        "<footer>Built by <code>peftcore report</code> from the case records in "
        f"<code>{_e(run.run_dir)}</code>; summary.csv and summary.md hold the same numbers.</footer>"
    )
    out.append("</main></body></html>")
    return "\n".join(out) + "\n"
