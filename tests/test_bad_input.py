"""Every mistake a new user made on a copy of the specs, caught before a model loads, one line each.

Table-driven: each row breaks a copy of the shipped specs (or a data file, or a command-line
option) the way a user did, and names the file (or option), the key and the words of the one
line that must come back. Spec and data mistakes are checked through the library (what
collection and ``peftcore list`` run); options through pytest itself (``pytester``), where
they must be usage errors before collection. Nothing here loads a model or trains: a
hypothesis test at the end checks that random edits of a spec either load or fail this way.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftcore.errors import AssetError, SpecError
from peftcore.spec import SpecStore, expand

ONE = "methods: [lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
QA_ROWS = [{"question": f"q{i}?", "answer": f"a{i}"} for i in range(12)]
QA_TASK = """\
description: a local QA file
type: generation
source: {{kind: local, path: {path}, format: {fmt}}}
fields: {{question: question, answers: answer}}
prompt: "Q: {{question}}\\nA:"
target: " {{answer_text}}"
metrics: [f1]
"""


# Nine levels of nine aliases each: 9**9 values expanded, a hang if anything walked them.
LAUGHS = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)
)


def edit(specs: Path, rel: str, old: str | None, new: str) -> Path:
    """Replace ``old`` by ``new`` in a spec file (``old`` None: write the file anew)."""
    path = specs / rel
    if old is None:
        path.write_text(new, encoding="utf-8")
    else:
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


# (what the user did, file, old text (None: the whole file), new text, file at fault, key, words)
SPEC_MISTAKES: list[tuple[str, str, str | None, str, str, str | None, str]] = [
    (
        "max_steps: 0",
        "profiles/p.yaml",
        None,
        ONE + "training: {max_steps: 0}\n",
        "profiles/p.yaml",
        "training.max_steps",
        "expected at least 1, got 0",
    ),
    (
        "learning_rate: 0",
        "methods/lora.yaml",
        "tuner: lora",
        "tuner: lora\ntraining: {learning_rate: 0}",
        "methods/lora.yaml",
        "training.learning_rate",
        "expected more than 0, got 0",
    ),
    (
        "seed: -1",
        "profiles/p.yaml",
        None,
        ONE + "training: {seed: -1}\n",
        "profiles/p.yaml",
        "training.seed",
        "expected at least 0, got -1",
    ),
    (
        "seed: 2**32",
        "profiles/p.yaml",
        None,
        ONE + "training: {seed: 4294967296}\n",
        "profiles/p.yaml",
        "training.seed",
        "expected at most 4294967295, got 4294967296",
    ),
    (
        "optimizer: adam",
        "profiles/p.yaml",
        None,
        ONE + "training: {optimizer: adam}\n",
        "profiles/p.yaml",
        "training.optimizer",
        "transformers has no optimizer 'adam'; did you mean",
    ),
    (
        "lr_scheduler: cosinee",
        "methods/lora.yaml",
        "tuner: lora",
        "tuner: lora\ntraining: {lr_scheduler: cosinee}",
        "methods/lora.yaml",
        "training.lr_scheduler",
        "did you mean 'cosine'",
    ),
    (
        "attribute access in a template",
        "tasks/sst2.yaml",
        "{sentence}",
        "{sentence.upper}",
        "tasks/sst2.yaml",
        "prompt",
        "{sentence.upper} reaches into a field",
    ),
    (
        "index in a template",
        "tasks/sst2.yaml",
        "{sentence}",
        "{sentence[0]}",
        "tasks/sst2.yaml",
        "prompt",
        "reaches into a field",
    ),
    (
        "r: big",
        "methods/lora.yaml",
        "r: 32",
        "r: big",
        "methods/lora.yaml",
        "adapter.r",
        "LoraConfig takes an integer, got 'big'",
    ),
    (
        "r: 0",
        "methods/lora.yaml",
        "r: 32",
        "r: 0",
        "methods/lora.yaml",
        "adapter.r",
        "expected at least 1, got 0",
    ),
    (
        "lora_dropout: 1.5",
        "methods/lora.yaml",
        "lora_dropout: 0.05",
        "lora_dropout: 1.5",
        "methods/lora.yaml",
        "adapter.lora_dropout",
        "a dropout probability is at least 0 and below 1",
    ),
    (
        "use_dora: yes-please",
        "methods/dora.yaml",
        "use_dora: true",
        "use_dora: yes-please",
        "methods/dora.yaml",
        "adapter.use_dora",
        "takes true or false",
    ),
    (
        "accuracy on a generation task",
        "tasks/squad.yaml",
        "metrics: [f1, exact_match]",
        "metrics: [accuracy]",
        "tasks/squad.yaml",
        "metrics[0]",
        "'accuracy' scores indices, which a generation task does not give",
    ),
    (
        "an unknown metric",
        "tasks/sst2.yaml",
        "metrics: [accuracy,",
        "metrics: [blue, accuracy,",
        "tasks/sst2.yaml",
        "metrics[0]",
        "unknown metric 'blue'",
    ),
    (
        "a compare rule naming no method of the profile",
        "profiles/p.yaml",
        None,
        "methods: [base, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "compare: [{metric: accuracy, case: lroa, baseline: base, must: beat}]\n",
        "profiles/p.yaml",
        "compare[0].case",
        "'lroa' matches no method of this profile; did you mean 'lora'",
    ),
    (
        "a compare baseline not in the profile",
        "profiles/p.yaml",
        None,
        ONE + "compare: [{metric: accuracy, case: lora, baseline: base, must: beat}]\n",
        "profiles/p.yaml",
        "compare[0].baseline",
        "no method 'base' in this profile",
    ),
    (
        "a bound for a method not in the profile",
        "profiles/p.yaml",
        None,
        ONE + "expect: {accuracy: {min: 0.5, methods: [qlora]}}\n",
        "profiles/p.yaml",
        "expect.accuracy.methods",
        "'qlora' matches no method of this profile",
    ),
    (
        "a bad dtype in defaults.yaml",
        "defaults.yaml",
        "dtype: fp32",
        "dtype: fp64",
        "defaults.yaml",
        "model.dtype",
        "expected one of fp32, bf16, fp16; got 'fp64'",
    ),
    (
        "a missing local model folder",
        "models/local.yaml",
        None,
        "description: mine\nsource: {kind: local, path: ../nowhere}\n",
        "models/local.yaml",
        None,
        "source.path ../nowhere is not a model folder",
    ),
    (
        "train: 0 with a method that trains",
        "profiles/p.yaml",
        None,
        ONE + "data: {train: 0, seen: 0}\n",
        "profiles/p.yaml",
        "data.train",
        "0 examples to train on, but lora train",
    ),
    (
        "processes: 0",
        "profiles/p.yaml",
        None,
        ONE + "training: {processes: 0}\n",
        "profiles/p.yaml",
        "training.processes",
        "expected at least 1, got 0",
    ),
    (
        "processes: 2 on a method that does not train",
        "methods/base.yaml",
        "tuner: none",
        "tuner: none\ntraining: {processes: 2}",
        "methods/base.yaml",
        "training.processes",
        "2 processes, but tuner none does not train",
    ),
    (
        "processes: 2 on an untrained variant",
        "profiles/p.yaml",
        None,
        "methods: [base2]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "variants: {base2: {include: base, training: {processes: 2}}}\n",
        "profiles/p.yaml",
        "variants.base2.training.processes",
        "2 processes, but tuner none does not train",
    ),
    (
        "parallelism: fsdp in one process",
        "profiles/p.yaml",
        None,
        ONE + "training: {parallelism: fsdp}\n",
        "profiles/p.yaml",
        "training.parallelism",
        "fsdp shards the model over training.processes, which is 1; expected processes 2 or more",
    ),
    (
        "parallelism: fsdp with prompt tuning",
        "profiles/p.yaml",
        None,
        "methods: [prompt_tuning]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "training: {processes: 2, parallelism: fsdp}\n",
        "profiles/p.yaml",
        "training.parallelism",
        "fsdp with tuner prompt_tuning fails in training (its virtual-token embedding",
    ),
    (
        "a task bound on a metric the task never reports",
        "tasks/sst2.yaml",
        "metrics: [accuracy, macro_f1, brier_score]",
        "metrics: [accuracy, macro_f1, brier_score]\nexpect: {exact_match: {min: 0.9}}",
        "tasks/sst2.yaml",
        "expect.exact_match",
        "task sst2 never reports exact_match, so this bound would never be checked; expected one of the "
        "metrics it reports: accuracy, accuracy_norm, macro_f1, brier_score",
    ),
    (
        "a profile bound whose methods run only where the metric is not reported",
        "profiles/p.yaml",
        None,
        "methods: [base, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "grids: [{methods: [lora], tasks: [squad]}]\nexpect: {f1: {min: 0.5, methods: [base]}}\n",
        "profiles/p.yaml",
        "expect.f1",
        "no task this applies to reports f1, so it would never be checked; expected one of the metrics "
        "they report (sst2: accuracy, accuracy_norm, macro_f1, brier_score)",
    ),
    (
        "a compare rule on a metric no task of its cases reports",
        "profiles/p.yaml",
        None,
        "methods: [base, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        "compare: [{metric: exact_match, case: lora, baseline: base, must: beat}]\n",
        "profiles/p.yaml",
        "compare[0].metric",
        "no task this applies to reports exact_match, so it would never be checked",
    ),
    (
        "tune: a key that is not a training key",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rat: {low: 1.0e-5, high: 1.0e-2}}}\n",
        "profiles/p.yaml",
        "tune.search.training.learning_rat",
        "training.learning_rat cannot be searched; numeric training keys: did you mean 'learning_rate'?",
    ),
    (
        "tune: an adapter keyword the method's tuner lacks",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {adapter.rank: {values: [4, 8]}}}\n",
        "profiles/p.yaml",
        "tune.search.adapter.rank",
        "LoraConfig",
    ),
    (
        "tune: a range with low above high",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-2, high: 1.0e-5}}}\n",
        "profiles/p.yaml",
        "tune.search.training.learning_rate",
        "low (0.01) must be below high (1e-05)",
    ),
    (
        "tune: a log-scale range from 0",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 0, high: 1.0e-2}}}\n",
        "profiles/p.yaml",
        "tune.search.training.learning_rate.low",
        "0 on a log scale: both ends must be above 0",
    ),
    (
        "tune: no tuning split",
        "profiles/p.yaml",
        None,
        ONE + "tune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}}}\n",
        "profiles/p.yaml",
        "data.tune",
        "the tuning split is empty (0)",
    ),
    (
        "tune: an objective the task does not report",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}},"
        " objective: {metric: f1}}\n",
        "profiles/p.yaml",
        "tune.objective.metric",
        "task 'sst2' does not report 'f1'; it reports loss, accuracy",
    ),
    (
        "tune: a budget of 0 trials",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}},"
        " sampler: tpe, trials: 0}\n",
        "profiles/p.yaml",
        "tune.trials",
        "expected at least 1, got 0",
    ),
    (
        "tune: a per-method change for a method the profile does not run",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}},"
        " methods: {dora: {points: 3}}}\n",
        "profiles/p.yaml",
        "tune.methods.dora",
        "not a method of this profile",
    ),
    (
        "tune: compare_default that is not true or false",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}},"
        " compare_default: sometimes}\n",
        "profiles/p.yaml",
        "tune.compare_default",
        "expected true or false",
    ),
    (
        "tune: a pruner that would look at a trial only at its last step",
        "profiles/p.yaml",
        None,
        ONE + "data: {tune: 20}\ntune: {search: {training.learning_rate: {low: 1.0e-5, high: 1.0e-2}},"
        " steps: 10, pruner: hyperband, prune_after: 10}\n",
        "profiles/p.yaml",
        "tune.prune_after",
        "10 is not below a trial's 10 optimizer steps",
    ),
    (
        "nested YAML aliases (a billion laughs)",
        "tasks/sst2.yaml",
        "description:",
        LAUGHS + "description:",
        "tasks/sst2.yaml",
        None,
        "YAML aliases nested from line 5 expand to more than 10,000 values (a 'billion laughs')",
    ),
]


@pytest.mark.parametrize(
    ("rel", "old", "new", "at_fault", "key", "words"),
    [pytest.param(*row[1:], id=row[0]) for row in SPEC_MISTAKES],
)
def test_a_spec_mistake_is_one_line_before_any_model_loads(
    specs: Path,
    monkeypatch: pytest.MonkeyPatch,
    rel: str,
    old: str | None,
    new: str,
    at_fault: str,
    key: str | None,
    words: str,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as a pytest run is, unless --allow-network
    # A one-case profile that uses what the row edits (a row may write the profile itself).
    kind, _, stem = rel.partition("/")
    one = {"models": ONE.replace("smollm2-135m", "local"), "tasks": ONE.replace("sst2", stem[:-5])}
    (specs / "profiles" / "p.yaml").write_text(
        one.get(kind, ONE).replace("[lora]", f"[{stem[:-5]}]") if kind == "methods" else one.get(kind, ONE)
    )
    edit(specs, rel, old, new)
    profile = "p"
    with pytest.raises((SpecError, AssetError)) as raised:
        store = SpecStore(specs)
        cases = expand(store, profile)
        from peftcore.models.checkpoints import check_available

        for model in {c.model.name: c.model for c in cases}.values():
            check_available(model, offline=True)
    message = str(raised.value)
    assert "\n" not in message
    assert str(specs / at_fault) in message
    if key is not None:
        assert f"key {key!r}" in message
    assert words in message


@pytest.mark.parametrize(
    "expect",
    [
        "{f1: {min: 0.5, methods: [lora]}}",  # lora runs on squad too, base does not
        "{seen.exact_match: {min: 0.1}}",  # squad's, while sst2 has none
        "{accuracy_norm: {min: 0.1}}",  # the choice evaluator's own, listed by no task
        "{primary: {min: 0.1}}",
        "{training.final_loss: {max: 2.0, methods: [lora]}}",  # a cost figure, not a metric
    ],
)
def test_a_bound_that_some_case_of_the_profile_reports_loads(specs: Path, expect: str) -> None:
    """A profile's bound covers tasks with different metrics: refused only when no case it
    applies to reports the metric (the rows above), not when some do not."""
    (specs / "profiles" / "p.yaml").write_text(
        "methods: [base, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"
        f"grids: [{{methods: [lora], tasks: [squad]}}]\nexpect: {expect}\n"
    )
    assert len(expand(SpecStore(specs), "p")) == 3


def test_trackers_with_several_processes_are_not_built(specs: Path) -> None:
    """report_to and processes > 1 may come from different files: refused where the budget is
    resolved (the profile), in one line."""
    import tensorboard  # noqa: F401  (the dev extra; a tracker that is not installed is refused first)

    (specs / "methods" / "lora.yaml").write_text(
        (specs / "methods" / "lora.yaml").read_text() + "training: {processes: 2}\n"
    )
    (specs / "profiles" / "p.yaml").write_text(ONE + "training: {report_to: [tensorboard]}\n")
    with pytest.raises(SpecError) as raised:
        expand(SpecStore(specs), "p")
    assert str(raised.value) == (
        f"{specs / 'profiles' / 'p.yaml'}: key 'training.report_to': tensorboard with training.processes 2 "
        "is not built yet (the trackers log from the session's process, which does not train then); "
        "drop one of the two"
    )


def test_a_model_folder_of_pickle_weights_is_refused_before_it_loads(specs: Path, tmp_path: Path) -> None:
    """A folder holding only ``pytorch_model.bin``: one line saying why (pickle) and what to do,
    at collection and again where the model would load, before anything reads the file (which
    is not a pickle at all here)."""
    from peftcore.models.checkpoints import check_available, checkpoint_dir

    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "pytorch_model.bin").write_bytes(b"not read")
    model = f"description: mine\nsource: {{kind: local, path: {folder}}}\n"
    (specs / "models" / "local.yaml").write_text(model)
    (specs / "profiles" / "p.yaml").write_text(ONE.replace("smollm2-135m", "local"))
    [case] = expand(SpecStore(specs), "p")
    with pytest.raises(AssetError) as raised:
        check_available(case.model, offline=True)
    assert str(raised.value) == (
        f"{specs / 'models' / 'local.yaml'}: key 'source.path': {folder} holds only pickle weights "
        "(pytorch_model.bin); peftcore loads safetensors only (unpickling a file can run any code in it); "
        "expected model.safetensors: convert the folder once in an environment you trust, with "
        "AutoModelForCausalLM.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)"
    )
    with pytest.raises(AssetError, match="holds only pickle weights"):
        checkpoint_dir(case.model)  # what load_base asks first, before transformers reads a byte
    (folder / "model.safetensors").write_bytes(b"")  # with safetensors beside it, the pickle is ignored
    assert checkpoint_dir(case.model) == str(folder)


def test_a_batch_larger_than_the_train_split_is_recorded_as_trained(specs: Path) -> None:
    """``batch_size: 64`` over 40 training examples loads (tests train tiny splits on purpose), and
    the record's training figures carry the batch the case trained with next to the spec's 64
    (``effective_batch_size``, set by peftcore.train.trainer.train from the split it is given)."""
    from peftcore.train.trainer import effective_batch_size

    (specs / "profiles" / "p.yaml").write_text(
        ONE + "training: {batch_size: 64}\ndata: {train: 40, seen: 10}\n"
    )
    [case] = expand(SpecStore(specs), "p")
    assert case.training.batch_size == 64
    assert effective_batch_size(case.training.batch_size, case.data.train) == 40
    assert effective_batch_size(64, 40, processes=2) == 20  # each process gets half the split
    assert effective_batch_size(4, 40) == 4


# --------------------------------------------------------------------------- data files

DATA_MISTAKES = [
    ("latin-1 JSON Lines", "qa.jsonl", "json", lambda rows: _jsonl(rows).encode("latin-1"), "not UTF-8 text"),
    (
        "a .jsonl.gz that is not gzip",
        "qa.jsonl.gz",
        "json",
        lambda rows: _jsonl(rows).encode(),
        "not gzip data, though its name ends in .gz",
    ),
    (
        "a broken Parquet file",
        "qa.parquet",
        "parquet",
        lambda rows: b"PAR1 not really",
        "is not a readable Parquet file",
    ),
    (
        "format: csv on JSON Lines",
        "qa.jsonl",
        "csv",
        lambda rows: _jsonl(rows).encode(),
        "line 1: a JSON record, not a CSV header row; is it JSON Lines (format: json)?",
    ),
    (
        "a CSV row with more fields than the header",
        "qa.csv",
        "csv",
        lambda rows: b"question,answer\nq0?,a0\nq1?,a1,extra\n",
        "line 3: 2 fields in the header, another number on this line",
    ),
    (
        "invalid JSON on a line",
        "qa.jsonl",
        "json",
        lambda rows: (_jsonl(rows) + "{oops\n").encode(),
        "line 13 is not valid JSON",
    ),
]


def _jsonl(rows: list[dict[str, Any]]) -> str:
    rows = [{**rows[0], "question": "caf\u00e9 au lait?"}, *rows[1:]]  # a non-ASCII character
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.mark.parametrize(
    ("name", "fmt", "content", "words"), [pytest.param(*row[1:], id=row[0]) for row in DATA_MISTAKES]
)
def test_a_data_file_the_readers_cannot_handle_names_the_file(
    specs: Path, tmp_path: Path, name: str, fmt: str, content: Any, words: str
) -> None:
    from peftcore.data.tasks import clear_caches, load_task

    data = tmp_path / name
    data.write_bytes(content(QA_ROWS))
    (specs / "tasks" / "qa.yaml").write_text(QA_TASK.format(path=data, fmt=fmt))
    task = SpecStore(specs).get("tasks", "qa")
    clear_caches()
    with pytest.raises((SpecError, AssetError)) as raised:
        from peftcore.spec import DataSizes

        load_task(task, DataSizes(train=4, held_out=4, seen=2))
    message = str(raised.value)
    assert "\n" not in message and str(data) in message and str(specs / "tasks" / "qa.yaml") in message
    assert words in message


def test_a_gzip_file_that_is_fine_still_reads(specs: Path, tmp_path: Path) -> None:
    from peftcore.data.tasks import load_task
    from peftcore.spec import DataSizes

    data = tmp_path / "qa.jsonl.gz"
    data.write_bytes(gzip.compress(_jsonl(QA_ROWS).encode()))
    (specs / "tasks" / "qa.yaml").write_text(QA_TASK.format(path=data, fmt="json"))
    loaded = load_task(SpecStore(specs).get("tasks", "qa"), DataSizes(train=4, held_out=4, seen=2))
    assert len(loaded.held_out) == 4


# --------------------------------------------------------------------------- command-line options

INI = "[pytest]\npeftcore_specs = specs\naddopts = -p no:cacheprovider -p no:hypothesispytest\n"

# (what the user typed, options, the words of the usage error)
OPTION_MISTAKES = [
    ("--rerun that does not parse", ["--rerun=((("], "--rerun: '(((' is not a -k expression"),
    ("--run-id escaping the results", ["--run-id", "../escape"], "--run-id: expected a folder name"),
    (
        "--metric-baseline that does not exist",
        ["--metric-baseline", "nowhere.json"],
        "--metric-baseline: baseline nowhere.json does not exist",
    ),
    ("--seeds that are not numbers", ["--seeds", "a,b"], "--seeds: expected comma-separated integers"),
    ("--seeds -1", ["--seeds", "-1"], "--seeds: expected integers from 0 to 4294967295, got -1 in '-1'"),
    ("--seeds 1.5", ["--seeds=0,1.5"], "--seeds: expected comma-separated integers like 0,1,2, got '0,1.5'"),
    (
        "--seeds beyond numpy's range",
        ["--seeds=0,4294967296"],
        "--seeds: expected integers from 0 to 4294967295, got 4294967296 in '0,4294967296'",
    ),
    (
        "--metric-compare-fail without a tolerance",
        ["--metric-compare-fail", "f1"],
        "--metric-compare-fail: 'f1' is not metric:tolerance",
    ),
]


@pytest.mark.parametrize(("args", "words"), [pytest.param(*row[1:], id=row[0]) for row in OPTION_MISTAKES])
def test_a_bad_option_is_a_usage_error_before_collection(
    pytester: pytest.Pytester, shipped_specs: Path, args: list[str], words: str
) -> None:
    import shutil

    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(".ini", pytest=INI)
    result = pytester.runpytest("specs", "--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {words}*"])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


def test_command_line_sizes_are_checked_against_the_data_before_a_model_loads(
    pytester: pytest.Pytester, shipped_specs: Path
) -> None:
    """``--held-out-size 100000``: every case fails at once with one line and a record; no model
    is loaded (the model loader would fail the test if it were called)."""
    import shutil

    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(".ini", pytest=INI)
    pytester.makeconftest(NO_MODELS)
    result = pytester.runpytest_subprocess(
        "specs",
        "-q",
        "--profile",
        "smoke",
        "-m",
        "sst2 and (base or lora)",
        "--held-out-size",
        "100000",
        "--results-dir",
        "runs",
        "--run-id",
        "r",
        "--no-report",
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            (
                "*lora-smollm2-135m-sst2: loading the task data: command line: key 'data': "
                "train 40 + held_out 100000 > 872 usable examples of task sst2*"
            )
        ]
    )
    assert "a model was loaded" not in result.stdout.str()
    assert "Benchmark fixture was not used" not in result.stdout.str()
    records = sorted(p.name for p in (pytester.path / "runs" / "r" / "cases").iterdir())
    assert records == ["base-smollm2-135m-sst2.json", "lora-smollm2-135m-sst2.json"]


NO_MODELS = """
import pytest

@pytest.fixture(scope="session")
def base_models():
    class NoModels:
        def get(self, case):
            raise AssertionError("a model was loaded")
    return NoModels()
"""


NOT_WRITABLE = "{path}/ro is not writable (Permission denied)"


@pytest.mark.parametrize(
    ("in_the_way", "results_ini", "args", "words"),
    [
        pytest.param(
            "a file",
            None,
            ["--results-dir", "afile/runs"],
            "--results-dir: cannot write runs to {path}/afile/runs: {path}/afile is a file, not a folder",
            id="--results-dir under a file",
        ),
        pytest.param(
            "a file",
            "afile/runs",
            [],
            "--results-dir (not given: ini peftcore_results): cannot write runs to {path}/afile/runs: "
            "{path}/afile is a file, not a folder",
            id="ini peftcore_results under a file",
        ),
        pytest.param(
            "a file",
            None,
            ["--report-dir", "afile"],
            "--report-dir: cannot write the report to {path}/afile: {path}/afile is a file, not a folder",
            id="--report-dir a file",
        ),
        pytest.param(
            "no permission",
            None,
            ["--results-dir", "ro/runs"],
            "--results-dir: cannot write runs to {path}/ro/runs: " + NOT_WRITABLE,
            id="--results-dir in a read-only folder",
        ),
        pytest.param(
            "no permission",
            "ro/runs",
            [],
            "--results-dir (not given: ini peftcore_results): cannot write runs to {path}/ro/runs: "
            + NOT_WRITABLE,
            id="reports/runs read-only",
        ),
    ],
)
def test_a_results_folder_that_cannot_be_written_is_a_usage_error_at_start(
    pytester: pytest.Pytester,
    shipped_specs: Path,
    in_the_way: str,
    results_ini: str | None,
    args: list[str],
    words: str,
) -> None:
    """One line naming the option and the folder, before collection; not 80 lines of INTERNALERROR
    when the first file is written. A file in the way fails for everyone; a folder without write
    permission only for a user other than root (root writes there anyway, and so would the run)."""
    import os
    import shutil

    if in_the_way == "no permission" and os.geteuid() == 0:
        pytest.skip("root writes into a folder without write permission: nothing to refuse")
    shutil.copytree(shipped_specs, pytester.path / "specs")
    pytester.makefile(".ini", pytest=INI + (f"peftcore_results = {results_ini}\n" if results_ini else ""))
    pytester.makeconftest(NO_MODELS)
    (pytester.path / "afile").write_text("not a folder")
    (pytester.path / "ro").mkdir(mode=0o555)
    try:
        result = pytester.runpytest_subprocess(
            "specs", "-q", "--profile", "smoke", "-m", "sst2 and base", "--run-id", "r", *args
        )
    finally:
        (pytester.path / "ro").chmod(0o755)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"ERROR: {words.format(path=pytester.path)}"])
    output = result.stdout.str() + result.stderr.str()
    assert "INTERNALERROR" not in output and "Traceback" not in output and "a model was loaded" not in output


# --------------------------------------------------------------------------- random edits

KEYS = ["r", "lora_alpha", "lora_dropout", "target_modules", "use_dora", "bias", "fan_in_fan_out"]
VALUES = st.one_of(
    st.integers(-3, 300),
    st.floats(-2, 2),
    st.floats(),
    st.booleans(),
    st.text(max_size=6),
    st.none(),
    st.lists(st.integers(0, 3), max_size=2),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    key=st.sampled_from(KEYS),
    value=VALUES,
    training=st.dictionaries(
        st.sampled_from(["max_steps", "learning_rate", "warmup_ratio", "seed", "batch_size"]),
        VALUES,
        max_size=2,
    ),
)
def test_random_edits_load_or_fail_with_one_line(
    shipped_specs: Path, tmp_path_factory: pytest.TempPathFactory, key: str, value: Any, training: dict
) -> None:
    """A randomly edited LoRA spec either loads into a budget peft and transformers accept, or fails
    at load with one line naming the file: it never reaches a model load invalid."""
    import math
    import shutil

    import yaml

    specs = Path(shutil.copytree(shipped_specs, tmp_path_factory.mktemp("edit") / "specs"))
    method = yaml.safe_load((specs / "methods" / "lora.yaml").read_text())
    method["adapter"][key] = value
    method["training"] = training
    (specs / "methods" / "lora.yaml").write_text(yaml.safe_dump(method))
    (specs / "profiles" / "p.yaml").write_text(ONE)
    try:
        [case] = expand(SpecStore(specs), "p")
    except SpecError as err:
        assert "\n" not in str(err) and str(specs / "methods" / "lora.yaml") in str(err)
        return
    budget = case.training
    assert budget.max_steps >= 1 and budget.learning_rate > 0 and budget.seed >= 0
    assert math.isfinite(budget.learning_rate) and 0 <= budget.warmup_ratio <= 1
    adapter = case.method.adapter
    assert isinstance(adapter.get("r"), int) and not isinstance(adapter.get("r"), bool) and adapter["r"] >= 1
    dropout = adapter.get("lora_dropout", 0.0)
    assert isinstance(dropout, (int, float)) and 0 <= dropout < 1
    targets = adapter.get("target_modules")
    assert targets is None or isinstance(targets, str) or all(isinstance(t, str) for t in targets)
    assert adapter.get("bias", "none") in ("none", "all", "lora_only")
    assert isinstance(adapter.get("use_dora", False), bool)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--device", "tpu"], "argument --device: expected cpu, cuda or cuda:N, got 'tpu'"),
        (["--model", "/nonexistent/config.json"], "--model /nonexistent/config.json: no such file or folder"),
        (["--budget", "lots"], "--budget: expected a number and a unit"),
    ],
    ids=["estimate --device tpu", "estimate --model of a missing file", "estimate --budget lots"],
)
def test_a_bad_estimate_option_is_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    from peftcore.cli import main

    base = ["estimate", "--model", "smollm2-135m", "--method", "lora"]
    try:
        code = main([*base, *args])
    except SystemExit as exit_:  # argparse refuses the option itself
        code = int(exit_.code or 0)
    err = capsys.readouterr().err
    assert code == 2
    assert words in err and "Traceback" not in err
