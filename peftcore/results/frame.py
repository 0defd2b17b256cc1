"""Case records as a tidy pandas DataFrame: one row per case and seed, one column per number.

``peftcore.load_results`` reads run folders into it; the report builds its CSV and its tables
from it (mean and standard deviation over seeds are a ``groupby``, :func:`seed_stats`). Columns::

    run_id case_id method model task seed status reason profile primary_metric   identity (strings)
    held_out.<metric>  seen.<metric>  ood.<task>.<metric>                        metrics (float64)
    held_out.<metric>.stderr  .ci_low  .ci_high  (each metric column)           its uncertainty (float64)
    training.peak_memory_bytes  inference.latency_ms_per_example  ...            cost figures
    general_text.forgetting_nats_per_token  ...                                  (the unit in the name)
    training.precision  base_model.quantization  inference.batch_size  ...       other block fields
    provenance.versions.torch  provenance.finished_at  ...                       where it comes from
    spec.method.tuner  spec.method.adapter.r  spec.training.learning_rate  ...    the resolved spec
    tuning.values.<key>  tuning.pruned_at_step                                  a search's (trials=True)

A value a record does not carry (the untrained base has no training; a failed case no metrics) is
missing (NaN / <NA>), never zero. A cost figure's unit is the one its field declares in
:mod:`peftcore.vocab.record`; when the field's name does not already say it, the column name
gets it as a suffix (``forgetting`` in nats/token -> ``forgetting_nats_per_token``). Lists in the
spec (``target_modules``, ``metrics``) are JSON text, so every column can be grouped by.
``frame.attrs`` holds ``units`` and ``higher_is_better`` by column.

Each metric column is followed by its standard error and the ends of its 95% interval over the
examples it was scored on (the record's ``uncertainty`` block); they are NaN where the record has
none (a record from before intervals were kept, or a metric with no per-example scores). They are
numbers about a metric, not metrics: they declare no direction (:func:`is_uncertainty_column`).

A search's records (``load_results(..., trials=True)``) carry its values under
``tuning.values.<key>``; a trial's row has ``tuning.pruned_at_step`` (Int64), the step
``tune.pruner`` stopped it at, missing when it ran to its last step (and on every other row).

Pandas is imported inside the functions: the pytest plugin and the CLI import this package.
"""

from __future__ import annotations

import typing
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.results.store import (
    RunError,
    list_runs,
    load_run,
    newest_by_case,
    record_path,
)
from peftcore.results.variants import with_variants
from peftcore.spec.schema import flat
from peftcore.vocab.quantities import Quantity, higher_is_better, metric_names
from peftcore.vocab.record import (
    COST_BLOCKS,
    FIGURES,
    METRIC_BLOCKS,
    OOD_PREFIX,
    TUNE_SPLIT,
    Record,
    RecordError,
    case_key,
    case_seed,
    is_search_only,
    is_trial,
    primary_metric,
    pruned_at_step,
)

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "GROUP_KEYS",
    "IDENTITY",
    "UNCERTAINTY_FIELDS",
    "figure_column",
    "is_uncertainty_column",
    "load_results",
    "quantity_column",
    "record_numbers",
    "records_frame",
    "seed_stats",
]

IDENTITY = (
    "run_id",
    "case_id",
    "method",
    "model",
    "task",
    "seed",
    "status",
    "reason",
    "profile",
    "primary_metric",
    "variant_of",  # a deployment variant's row (method "<method>@<variant>"): the case it came from
    # trial: a search's trial, default: a run at the method's own values (both only with
    # load_results(trials=True)); tuned: a run at the values its trials chose
    "tuning",
)
GROUP_KEYS = ("model", "task", "method")  # a report row: its seeds are aggregated
# The fields of a record's uncertainty[split][metric] that get a column after the metric's own.
UNCERTAINTY_FIELDS = ("stderr", "ci_low", "ci_high")
DEFAULT_RESULTS = Path("reports/runs")
PRUNED_AT_STEP = "tuning.pruned_at_step"  # a trial's row: the step the pruner stopped it at


# --------------------------------------------------------------------------- column names


def _unit_words(unit: str) -> str:
    """``tokens/s`` -> ``tokens_per_second``, ``nats/token`` -> ``nats_per_token``, ``ms`` -> ``ms``."""
    return unit.replace("/s", "_per_second").replace("/", "_per_").replace(" ", "_")


def figure_column(block: str, name: str) -> str:
    """The column of a record field of a cost block: ``<block>.<name>``, with the figure's unit
    appended when the name does not say it already.

    >>> figure_column("training", "peak_memory_bytes"), figure_column("general_text", "forgetting")
    ('training.peak_memory_bytes', 'general_text.forgetting_nats_per_token')
    """
    figure = FIGURES.get(block, {}).get(name)
    if figure is None:
        return f"{block}.{name}"
    words = _unit_words(figure.unit)
    said = f"_{words}_" in f"_{name}_"
    return f"{block}.{name}" if said else f"{block}.{name}_{words}"


def quantity_column(quantity: Quantity) -> str:
    """The column a (resolved) quantity is in: ``held_out.f1``, ``ood.arc_easy.accuracy``,
    ``training.peak_memory_bytes``."""
    if quantity.is_metric:
        return f"{quantity.block}.{quantity.name}"
    return figure_column(quantity.block, quantity.name)


def is_uncertainty_column(column: str) -> bool:
    """Whether ``column`` is a metric's standard error or interval end, not a metric.

    >>> is_uncertainty_column("held_out.accuracy.ci_low"), is_uncertainty_column("held_out.accuracy")
    (True, False)
    """
    head, _, rest = column.partition(".")
    if head not in (*METRIC_BLOCKS, TUNE_SPLIT) and head != "ood":
        return False
    depth = 2 if head == "ood" else 1  # ood.<task>.<metric>.<field> has one dot more
    return rest.count(".") >= depth and column.rpartition(".")[2] in UNCERTAINTY_FIELDS


# --------------------------------------------------------------------------- records -> frame


def _where(record: Mapping[str, Any]) -> str:
    return f"record {record.get('case_id')!r} of run {record.get('run_id')!r}"


def _number(value: Any, where: str, key: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError(f"{where}: key {key!r}: expected a number or null, got {value!r}")
    return float(value)


def _block_fields(record: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The scalar fields of the cost blocks, by column; lists and mappings (the loss curve, the
    live peak by kind) are left to the record."""
    row: dict[str, Any] = {}
    for block in COST_BLOCKS:
        values = record.get(block)
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise RecordError(f"{where}: key {block!r}: expected a mapping or null, got {values!r}")
        for name, value in values.items():
            if isinstance(value, (list, dict)):
                continue
            if name in FIGURES[block]:
                value = _number(value, where, f"{block}.{name}")
            row[figure_column(block, name)] = value
    return row


def _metric_fields(record: Mapping[str, Any], where: str) -> dict[str, float | None]:
    metrics = record.get("metrics") or {}
    if not isinstance(metrics, Mapping):
        raise RecordError(f"{where}: key 'metrics': expected a mapping, got {metrics!r}")
    row: dict[str, float | None] = {}
    for split in METRIC_BLOCKS:  # the task's declared metrics too, so a failed case has the columns
        for name in metric_names(record, split):
            row.setdefault(f"{split}.{name}", None)
    for split, values in metrics.items():
        if split not in (*METRIC_BLOCKS, TUNE_SPLIT) and not split.startswith(OOD_PREFIX):
            continue
        if not isinstance(values, Mapping):
            raise RecordError(f"{where}: key 'metrics.{split}': expected a mapping, got {values!r}")
        for name, value in values.items():
            row[f"{split}.{name}"] = _number(value, where, f"metrics.{split}.{name}")
    return row


def _uncertainty_fields(record: Mapping[str, Any], column: str, where: str) -> dict[str, float | None]:
    """``<column>.stderr``, ``.ci_low`` and ``.ci_high`` of the metric column ``column``: the
    record's ``uncertainty[split][metric]``, None where it has none."""
    uncertainty = record.get("uncertainty") or {}
    if not isinstance(uncertainty, Mapping):
        raise RecordError(f"{where}: key 'uncertainty': expected a mapping, got {uncertainty!r}")
    split, _, name = column.rpartition(".")  # ood.<task>.<metric>: the split has a dot in it
    block = uncertainty.get(split)
    entry = block.get(name) if isinstance(block, Mapping) else None
    entry = entry if isinstance(entry, Mapping) else {}
    return {
        f"{column}.{field}": _number(entry.get(field), where, f"uncertainty.{split}.{name}.{field}")
        for field in UNCERTAINTY_FIELDS
    }


def _row(record: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
    where = where or _where(record)
    row: dict[str, Any] = {key: record.get(key) for key in IDENTITY}
    row["seed"] = case_seed(record)
    row["primary_metric"] = primary_metric(record)
    tuning = record.get("tuning")
    if isinstance(tuning, Mapping):  # a search's trial or tuned run: its kind and values
        row["tuning"] = tuning.get("kind")
        row.update(flat(dict(tuning.get("values") or {}), "tuning.values"))
        if is_trial(record):  # set on every trial, so the column is there whether any was pruned
            row[PRUNED_AT_STEP] = pruned_at_step(record)
    for column, value in _metric_fields(record, where).items():  # each metric, then its uncertainty
        row[column] = value
        row.update(_uncertainty_fields(record, column, where))
    row.update(_block_fields(record, where))
    for key in ("provenance", "spec"):
        value = record.get(key)
        if isinstance(value, Mapping):
            row.update(flat(value, key))
    return row


def record_numbers(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers a record carries, by column: every metric of every split and every cost figure
    (what the trackers log at the end of a case). Missing values are left out."""
    where = _where(record)
    numbers = {**_metric_fields(record, where), **_block_fields(record, where)}
    figures = {figure_column(b, n) for b, names in FIGURES.items() for n in names}
    return {
        column: float(value)
        for column, value in numbers.items()
        if value is not None and (column in figures or column.partition(".")[0] not in COST_BLOCKS)
    }


def _column_order(name: str) -> int:
    """Identity, metrics (held-out, seen, other tasks), cost blocks, provenance, spec."""
    head = name.partition(".")[0]
    if name in IDENTITY:
        return 0  # a stable sort keeps IDENTITY's own order
    if head in (*METRIC_BLOCKS, "ood", TUNE_SPLIT):
        return 1 + (*METRIC_BLOCKS, "ood", TUNE_SPLIT).index(head)
    if head in COST_BLOCKS:
        return 10 + list(COST_BLOCKS).index(head)
    return 20 if head == "provenance" else 21


def _annotated_types() -> dict[str, Any]:
    """Column -> the Python type a cost block's TypedDict declares for it (``int | None`` -> int)."""
    types: dict[str, Any] = {}
    for block, cls in COST_BLOCKS.items():
        for name, hint in typing.get_type_hints(cls).items():
            args = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
            types[figure_column(block, name)] = args[0]
    return types


def _dtype(name: str, values: Sequence[Any], declared: Mapping[str, Any]) -> str | None:
    """The dtype of a column: metrics float64; declared fields by their annotation; the rest by
    the Python types of their values (JSON keeps ints and floats apart). None: leave as objects."""
    head = name.partition(".")[0]
    if head in (*METRIC_BLOCKS, TUNE_SPLIT) or name.startswith(OOD_PREFIX):
        return "float64"
    kind = declared.get(name)
    if kind is None:
        present = {type(v) for v in values if v is not None}
        kind = present.pop() if len(present) == 1 else float if present == {int, float} else None
    if kind is bool:
        return "boolean"
    if kind is int:
        return "Int64"
    if kind is float:
        return "float64"
    if kind is str:
        return "string"
    return None


def records_frame(
    records: Iterable[Mapping[str, Any]], *, where: Sequence[str] | None = None, trials: bool = False
) -> pd.DataFrame:
    """One row per record, in the order given (see the module's docstring for the columns).

    ``where`` names each record in errors (its file); RecordError when a metric or a cost figure
    is not a number, or a block is not a mapping. A search's trials (scored on the tuning split,
    not held_out) and its default runs (``tune.compare_default``: the same method, model, task
    and seed as a tuned run) are left out unless ``trials``: they are not rows of the comparison.
    """
    import pandas as pd

    pairs = [(r, where[i] if where else None) for i, r in enumerate(records)]
    rows = [_row(r, w) for r, w in pairs if trials or not is_search_only(r)]
    names: dict[str, None] = dict.fromkeys(IDENTITY)
    for row in rows:
        names.update(dict.fromkeys(row))
    ordered = sorted(names, key=_column_order)
    declared = _annotated_types()
    declared.update(dict.fromkeys(IDENTITY, str))
    declared[PRUNED_AT_STEP] = int  # a step; all missing when no trial was pruned, still Int64
    columns: dict[str, Any] = {}
    for name in ordered:
        values = [row.get(name) for row in rows]
        dtype = _dtype(name, values, declared)
        if name == "seed":
            columns[name] = pd.Series(values, dtype="int64")
        elif name in ("provenance.started_at", "provenance.finished_at"):
            columns[name] = pd.to_datetime(pd.Series(values, dtype="string"), utc=True, format="ISO8601")
        else:
            columns[name] = pd.Series(values, dtype=dtype if dtype else object)
    frame = pd.DataFrame(columns, index=pd.RangeIndex(len(rows)))
    units = {figure_column(b, n): f.unit for b, figures in FIGURES.items() for n, f in figures.items()}
    frame.attrs["units"] = {c: u for c, u in units.items() if c in frame.columns}
    frame.attrs["higher_is_better"] = {c: d for c in frame.columns if (d := _direction(c)) is not None}
    return frame


def _direction(column: str) -> bool | None:
    if is_uncertainty_column(column):
        return None
    head, _, rest = column.partition(".")
    if head in METRIC_BLOCKS:
        return higher_is_better(rest)
    if head == "ood":
        return higher_is_better(rest.partition(".")[2])
    for block, figures in FIGURES.items():
        for name, figure in figures.items():
            if column == figure_column(block, name):
                return figure.higher_is_better
    return None


# --------------------------------------------------------------------------- over seeds


def seed_stats(frame: pd.DataFrame, by: Sequence[str] = GROUP_KEYS) -> pd.DataFrame:
    """Mean, standard deviation (n - 1) and count of every number of ``frame`` per group of
    ``by`` (default: model, task, method, so over the seeds of a case); columns are
    ``(column, "mean" | "std" | "count")``, groups in order of first appearance."""
    numeric = [
        c
        for c in frame.columns
        if c not in by and c != "seed" and not c.startswith("spec.") and _is_number(frame[c])
    ]
    return frame.groupby(list(by), sort=False, dropna=False)[numeric].agg(["mean", "std", "count"])


def _is_number(column: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column))


# --------------------------------------------------------------------------- reading runs


def _run_folders(source: str | Path, results_dir: Path) -> list[Path]:
    """A run folder, a run id under ``results_dir``, or a folder of runs (all of them)."""
    path = Path(source)
    text = str(source)
    if "/" not in text and (results_dir / text / "cases").is_dir():
        return [results_dir / text]
    if (path / "cases").is_dir():
        return [path]
    if path.is_dir():
        runs = list_runs(path)
        if runs:
            return sorted(runs)
        raise RunError(f"{path}: not a run folder (no cases/) and holds no run folders")
    raise RunError(f"no run {text!r}: neither a folder nor a run id under {results_dir}")


def load_results(
    source: str | Path | Iterable[str | Path],
    *,
    results_dir: str | Path = DEFAULT_RESULTS,
    newest_only: bool = False,
    skip_unreadable: bool = False,
    trials: bool = False,
) -> pd.DataFrame:
    """The case records of one or more runs as a DataFrame, one row per case and seed, and one
    per deployment variant of a case (method ``<method>@<variant>``, ``variant_of`` its case).

    ``source`` is a run folder, a run id under ``results_dir`` (default ``reports/runs``), a
    folder holding run folders (every run in it), or a list of those. ``newest_only`` keeps the
    newest record of each (method, model, task, seed) over all of them (a cached case appears in
    every run that adopted it). A record file that cannot be read is a RecordError naming it,
    unless ``skip_unreadable`` (then its message is in ``frame.attrs["problems"]``). RunError
    names a source that is not a run. ``trials`` adds a search's trials (``tuning == "trial"``,
    their scores under ``tune.<metric>``, their values under ``tuning.values.<key>``, and
    ``tuning.pruned_at_step``: the step ``tune.pruner`` stopped the trial at, missing when it ran
    to its last step) and its runs at each method's own values (``tuning == "default"``, profile
    ``tune.compare_default``).

    >>> df = load_results("reports/runs")                                    # doctest: +SKIP
    >>> df.groupby(["task", "method"])["held_out.accuracy"].agg(["mean", "std"])  # doctest: +SKIP
    """
    pairs, problems = _read_records(source, Path(results_dir), newest_only, skip_unreadable)
    rows, wheres = [], []
    for record, where in pairs:  # each case followed by its deployment variants, as rows
        for row in with_variants([record]):
            rows.append(row)
            wheres.append(where)
    frame = records_frame(rows, where=wheres, trials=trials)
    frame.attrs["problems"] = problems
    return frame


def _read_records(
    source: str | Path | Iterable[str | Path], results_dir: Path, newest_only: bool, skip_unreadable: bool
) -> tuple[list[tuple[Record, str]], list[str]]:
    """Each record of the runs ``source`` names, with its file (for errors), and the problems."""
    sources = [source] if isinstance(source, (str, Path)) else list(source)
    if not sources:
        raise RunError("load_results: no run given")
    folders: list[Path] = []
    for item in sources:
        folders.extend(f for f in _run_folders(item, results_dir) if f not in folders)
    pairs: list[tuple[Record, str]] = []
    problems: list[str] = []
    for folder in folders:
        run = load_run(folder)
        if run.problems and not skip_unreadable:
            raise RecordError(run.problems[0])
        problems.extend(run.problems)
        pairs.extend((r, str(record_path(folder, str(r["case_id"])))) for r in run.records)
    if newest_only:
        newest = newest_by_case((r for r, _ in pairs), finished_only=False)
        pairs = [(r, where) for r, where in pairs if newest.get(case_key(r)) is r]
    return pairs, problems


def run_records(
    source: str | Path | Iterable[str | Path],
    *,
    results_dir: str | Path = DEFAULT_RESULTS,
    newest_only: bool = False,
) -> list[Record]:
    """The case records of the runs ``source`` names (as for :func:`load_results`)."""
    pairs, _ = _read_records(source, Path(results_dir), newest_only, skip_unreadable=False)
    return [record for record, _ in pairs]
