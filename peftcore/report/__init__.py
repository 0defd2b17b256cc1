"""The report: summary tables and one self-contained HTML page, read back from stored case records.

Everything is read from the run folders (:mod:`peftcore.results.store`), never taken from a live
session, so ``peftcore report`` and the pytest plugin write the same files for the same records.

    build      read the runs, render every file in memory, publish the folder whole
    tables     summary.csv, comparison.csv, summary.md and the terminal table
    html       report.html, with the figures embedded
    explorer   report.html's interactive comparison: points and fronts per (model, task);
               explorer_page: the same on the page, plotly.js and its selectors
    plots      the figures (matplotlib, imported only when one is drawn); canvas: their styling
    rows       records grouped into rows, mean ± std over seeds, the Pareto front
    summary    what each (model, task) says: columns, best method per column, highlights
    certainty  how sure it is: each value's 95% interval, paired tests (Holm), what a run can detect
    comparison what the comparison of two runs says
    facts      the run's facts, its failed cases and unreadable record files
    formats    how a number is written
    cli        ``peftcore report``

Importing this package does not import matplotlib or plotly: the CLI and the plugin import it at start-up.
"""

from peftcore.report.build import ReportError, Written, build_report, write_report
from peftcore.report.rows import pareto_front
from peftcore.report.tables import compact_table

__all__ = ["ReportError", "Written", "build_report", "compact_table", "pareto_front", "write_report"]
