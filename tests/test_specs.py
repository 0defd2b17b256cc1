"""The spec loader and profile expansion: bad input fails early with one line naming the file, the
key and what was expected; good input means what the spec files say."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peftcore.errors import SpecError
from peftcore.spec import KINDS, MethodSpec, SpecStore
from peftcore.spec.cases import Case, expand, resolve_training
from peftcore.spec.schema import plain


def write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def profile(root: Path, name: str = "p", **keys: Any) -> Path:
    """A profile file: one method, model and task unless ``keys`` say otherwise."""
    doc = {"methods": ["lora"], "models": ["smollm2-135m"], "tasks": ["sst2"], **keys}
    return write(root, f"profiles/{name}.yaml", yaml.safe_dump(doc))


def ids(cases: list[Case]) -> list[str]:
    return [c.case_id for c in cases]


# --------------------------------------------------------------------------- bad input

ONE = "methods: [lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"  # a 1-case profile
# (what is wrong, files to write, what to load, file at fault, key, part of the message)
LOAD = ("methods", "m")
BAD_INPUT: list[tuple[str, dict[str, str], tuple[str, str], str, str | None, str]] = [
    (
        "unknown key",
        {"methods/m.yaml": "tuner: lora\nadaptr: {r: 8}\n"},
        LOAD,
        "methods/m.yaml",
        "adaptr",
        "unknown key; did you mean 'adapter'?",
    ),
    (
        "wrong type",
        {"methods/m.yaml": "tuner: lora\ntraining: {max_steps: many}\n"},
        LOAD,
        "methods/m.yaml",
        "training.max_steps",
        "expected an integer, got 'many'",
    ),
    (
        "wrong type in a nested block",
        {"methods/m.yaml": "tuner: lora\nbase: {quantization: nf3}\n"},
        LOAD,
        "methods/m.yaml",
        "base.quantization",
        "expected one of none, nf4, fp4, int8; got 'nf3'",
    ),
    (
        "unknown peft keyword",
        {"methods/m.yaml": "tuner: lora\nadapter: {rr: 8}\n"},
        LOAD,
        "methods/m.yaml",
        "adapter.rr",
        "not a LoraConfig keyword (peft); did you mean 'r'?",
    ),
    (
        "keyword peftcore sets itself",
        {"methods/m.yaml": "tuner: lora\nadapter: {task_type: CAUSAL_LM}\n"},
        LOAD,
        "methods/m.yaml",
        "adapter.task_type",
        "set by peftcore itself",
    ),
    (
        "unknown tuner",
        {"methods/m.yaml": "tuner: lorra\n"},
        LOAD,
        "methods/m.yaml",
        "tuner",
        "unknown tuner 'lorra'; did you mean 'lora'",
    ),
    (
        "adapter block on full fine-tuning",
        {"methods/m.yaml": "tuner: full\nadapter: {r: 8}\n"},
        LOAD,
        "methods/m.yaml",
        "adapter",
        "tuner 'full' takes no adapter block",
    ),
    (
        "full fine-tuning of a quantized base",
        {"methods/m.yaml": "include: full\nbase: {quantization: nf4}\n"},
        LOAD,
        "methods/m.yaml",
        "base.quantization",
        "full fine-tuning cannot train quantized weights",
    ),
    (
        "include cycle",
        {"methods/m.yaml": "include: n\n", "methods/n.yaml": "include: m\ntuner: lora\n"},
        LOAD,
        "methods/n.yaml",
        "include",
        "include cycle: m.yaml -> n.yaml -> m.yaml",
    ),
    (
        "include of itself",
        {"methods/m.yaml": "include: m\ntuner: lora\n"},
        LOAD,
        "methods/m.yaml",
        "include",
        "include cycle: m.yaml -> m.yaml",
    ),
    (
        "include of nothing",
        {"methods/m.yaml": "include: lorra\n"},
        LOAD,
        "methods/m.yaml",
        "include",
        "no spec 'lorra'; did you mean 'lora'",
    ),
    (
        "invalid YAML",
        {"methods/m.yaml": "tuner: lora\nadapter: {r: 8\n"},
        LOAD,
        "methods/m.yaml",
        None,
        "invalid YAML at line 3",
    ),
    (
        "a key written twice",
        {
            "methods/m.yaml": "tuner: lora\ntraining: {max_steps: 3}\nadapter: {r: 8}\n"
            "training: {learning_rate: 0.1}\n"
        },
        LOAD,
        "methods/m.yaml",
        "training",
        "written twice, at lines 2 and 4",
    ),
    (
        "a nested key written twice",
        {"methods/m.yaml": "tuner: lora\nadapter: {r: 8, lora_alpha: 16, r: 16}\n"},
        LOAD,
        "methods/m.yaml",
        "adapter.r",
        "written twice, on line 2",
    ),
    (
        "a list at the top",
        {"methods/m.yaml": "- tuner: lora\n"},
        LOAD,
        "methods/m.yaml",
        None,
        "expected a mapping of keys at the top, got list",
    ),
    (
        "a name key (the file names a spec)",
        {"methods/m.yaml": "name: lora\ntuner: lora\n"},
        LOAD,
        "methods/m.yaml",
        "name",
        "a spec is named by its file (m)",
    ),
    (
        "alias inside itself",
        {"methods/m.yaml": "tuner: lora\nadapter: &a {x: *a}\n"},
        LOAD,
        "methods/m.yaml",
        None,
        "a YAML alias refers to a structure that contains it",
    ),
    (
        "seen larger than train",
        {"profiles/p.yaml": ONE + "data: {train: 10, seen: 20}\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "data.seen",
        "seen (20) is drawn from train (10)",
    ),
    (
        "empty matrix",
        {"profiles/p.yaml": "methods: []\nmodels: [smollm2-135m]\ntasks: [sst2]\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "methods",
        "empty list: a profile needs at least one method",
    ),
    (
        "a method listed twice",
        {"profiles/p.yaml": "methods: [lora, lora]\nmodels: [smollm2-135m]\ntasks: [sst2]\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "methods",
        "listed twice: lora",
    ),
    (
        "negative budget",
        {"profiles/p.yaml": ONE + "training: {max_steps: -1}\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "training.max_steps",
        "expected at least 1, got -1",
    ),
    (
        "no training step",
        {"profiles/p.yaml": ONE + "training: {max_steps: 0}\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "training.max_steps",
        "expected at least 1, got 0",
    ),
    (
        "a learning rate of 0",
        {"methods/lora.yaml": "tuner: lora\ntraining: {learning_rate: 0}\n"},
        ("methods", "lora"),
        "methods/lora.yaml",
        "training.learning_rate",
        "expected more than 0, got 0",
    ),
    (
        "negative seed",
        {"profiles/p.yaml": ONE + "training: {seed: -1}\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "training.seed",
        "expected at least 0, got -1",
    ),
    (
        "warmup ratio above one",
        {"profiles/p.yaml": ONE + "training: {warmup_ratio: 1.5}\n"},
        ("profiles", "p"),
        "profiles/p.yaml",
        "training.warmup_ratio",
        "expected at most 1, got 1.5",
    ),
    (
        "a learning rate that is not a number",
        {"methods/m.yaml": "tuner: lora\ntraining: {learning_rate: .nan}\n"},
        LOAD,
        "methods/m.yaml",
        "training.learning_rate",
        "expected a finite number, got nan",
    ),
    (
        "an unknown training key in a task",
        {"tasks/t.yaml": "include: sst2\ntraining: {max_lenght: 64}\n"},
        ("tasks", "t"),
        "tasks/t.yaml",
        "training.max_lenght",
        "did you mean 'max_length'?",
    ),
    (
        "a task field that is not a path",
        {"tasks/t.yaml": "include: sst2\nfields: {sentence: 5, label: label}\n"},
        ("tasks", "t"),
        "tasks/t.yaml",
        "fields.sentence",
        "expected a dotted path in a record or a list of them, got 5",
    ),
    (
        "a template naming a field that is not mapped",
        {"tasks/t.yaml": "include: sst2\nprompt: 'Review: {text}'\n"},
        ("tasks", "t"),
        "tasks/t.yaml",
        "prompt",
        "template names field {text}, which is not in fields",
    ),
    (
        "a model override of a keyword its tuner does not take",
        {"models/x.yaml": "include: smollm2-135m\nadapter_overrides: {vblora: {vector_lenght: 64}}\n"},
        ("models", "x"),
        "models/x.yaml",
        "adapter_overrides.vblora.vector_lenght",
        "not a VBLoRAConfig keyword (peft); did you mean 'vector_length'?",
    ),
    (
        "a model override for a tuner that does not exist",
        {"models/x.yaml": "include: smollm2-135m\nadapter_overrides: {vblorra: {vector_length: 64}}\n"},
        ("models", "x"),
        "models/x.yaml",
        "adapter_overrides.vblorra",
        "unknown tuner 'vblorra'; did you mean 'vblora'",
    ),
    (
        "a source missing the key its kind needs",
        {"models/x.yaml": "source: {kind: hub}\n"},
        ("models", "x"),
        "models/x.yaml",
        "source.id",
        "required when source.kind is 'hub'",
    ),
]


@pytest.mark.parametrize(
    ("files", "load", "at_fault", "key", "expected"),
    [pytest.param(*row[1:], id=row[0]) for row in BAD_INPUT],
)
def test_bad_input_fails_with_one_line_naming_file_and_key(
    specs: Path, files: dict[str, str], load: tuple[str, str], at_fault: str, key: str | None, expected: str
) -> None:
    for rel, text in files.items():
        write(specs, rel, text)
    store = SpecStore(specs)
    with pytest.raises(SpecError) as caught:
        kind, name = load
        store.get(kind, name)
        if kind == "profiles":
            expand(store, name)
    err = caught.value
    assert err.file == str(specs / at_fault)
    assert err.key == key
    assert expected in err.expected
    message = str(err)
    assert "\n" not in message
    assert message.startswith(f"{specs / at_fault}: ")


@pytest.mark.parametrize(
    ("axis", "listed", "expected"),
    [
        ("methods", "lorra", "unknown method 'lorra'; did you mean 'lora'"),
        # Nothing is close: the error lists what exists.
        ("models", "gpt-17", "unknown model 'gpt-17'; expected one of: "),
        ("tasks", "sst3", "unknown task 'sst3'; did you mean 'sst2'"),
        ("methods", "../models/smollm2-135m", "unknown method '../models/smollm2-135m'"),
    ],
)
def test_a_name_that_does_not_exist_is_the_profiles_error(
    specs: Path, axis: str, listed: str, expected: str
) -> None:
    path = profile(specs, **{axis: [listed]})
    with pytest.raises(SpecError) as caught:
        expand(SpecStore(specs), "p")
    assert (caught.value.file, caught.value.key) == (str(path), axis)
    assert expected in caught.value.expected


def test_an_unknown_profile_lists_the_profiles(specs: Path) -> None:
    with pytest.raises(SpecError, match=r"^unknown profile 'quik'; did you mean 'quick'\?$"):
        expand(SpecStore(specs), "quik")


def test_a_typo_in_defaults_names_defaults_yaml(specs: Path) -> None:
    text = (specs / "defaults.yaml").read_text().replace("  adapter: {}", "  adaptr: {}")
    write(specs, "defaults.yaml", text)
    with pytest.raises(SpecError) as caught:
        SpecStore(specs)
    assert (caught.value.file, caught.value.key) == (str(specs / "defaults.yaml"), "method.adaptr")


def test_yaml_merge_keys_are_not_duplicates(specs: Path) -> None:
    write(
        specs,
        "methods/m.yaml",
        """\
        tuner: lora
        adapter:
          <<: &shared {r: 8, lora_alpha: 16}
          r: 4
        """,
    )
    assert SpecStore(specs).get("methods", "m").adapter == {"r": 4, "lora_alpha": 16}


def test_a_directory_without_defaults_is_not_a_spec_directory(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"not a spec directory: defaults\.yaml is missing"):
        SpecStore(tmp_path)


def test_a_file_that_is_not_utf8_is_a_spec_error(specs: Path) -> None:
    (specs / "methods" / "m.yaml").write_bytes(b"tuner: lora\ndescription: \xff\xfe\n")
    with pytest.raises(SpecError, match=r"m\.yaml: not UTF-8 text"):
        SpecStore(specs).get("methods", "m")


def test_a_training_error_names_the_layer_that_wrote_it(specs: Path) -> None:
    """A wrong type in a task's or a profile's budget is that file's error, found at load time,
    not the error of whichever file happens to be merged last."""
    write(specs, "tasks/t.yaml", "include: sst2\ntraining: {max_length: long}\n")
    with pytest.raises(SpecError) as caught:
        SpecStore(specs).get("tasks", "t")
    assert (caught.value.file, caught.value.key) == (str(specs / "tasks/t.yaml"), "training.max_length")

    # `full` has its own training block; the profile's bad value is still the profile's.
    path = profile(specs, methods=["full"], training={"max_steps": "x"})
    with pytest.raises(SpecError) as caught:
        expand(SpecStore(specs), "p")
    assert (caught.value.file, caught.value.key) == (str(path), "training.max_steps")


def test_a_bad_command_line_override_is_the_command_lines_error(specs: Path) -> None:
    store = SpecStore(specs)
    with pytest.raises(
        SpecError, match=r"^command line: key 'training.batch_size': expected at least 1, got 0$"
    ):
        expand(store, "smoke", overrides={"batch_size": 0})
    with pytest.raises(
        SpecError, match=r"^command line: key 'data.seen': seen \(30\) is drawn from train \(20\)$"
    ):
        expand(store, "smoke", data_overrides={"train": 20, "seen": 30})


class TestVariantErrors:
    """An inline variant's error names the profile and the key under ``variants:``."""

    def test_unknown_keyword(self, specs: Path) -> None:
        path = profile(specs, methods=["v"], variants={"v": {"include": "lora", "adapter": {"rr": 8}}})
        with pytest.raises(SpecError) as caught:
            expand(SpecStore(specs), "p")
        assert (caught.value.file, caught.value.key) == (str(path), "variants.v.adapter.rr")

    def test_include_of_nothing(self, specs: Path) -> None:
        path = profile(specs, methods=["v"], variants={"v": {"include": "lorra"}})
        with pytest.raises(SpecError) as caught:
            expand(SpecStore(specs), "p")
        assert (caught.value.file, caught.value.key) == (str(path), "variants.v.include")
        assert "did you mean 'lora'" in caught.value.expected

    @pytest.mark.parametrize("declared", [5, [1, 2], "lora"])
    def test_not_a_mapping(self, specs: Path, declared: Any) -> None:
        path = profile(specs, methods=["v"], variants={"v": declared})
        with pytest.raises(SpecError) as caught:
            expand(SpecStore(specs), "p")
        assert (caught.value.file, caught.value.key) == (str(path), "variants.v")
        assert caught.value.expected.startswith("expected a mapping of method keys")


# --------------------------------------------------------------------------- property-based


def _yaml_values() -> st.SearchStrategy[Any]:
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=12)
        | st.sampled_from(["lora", "nf4", "auto", "hub", "{x}", "", "include", "2e-4"])
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
        max_leaves=12,
    )


YAML_VALUES = _yaml_values()
# Valid starting points: a mutation of each is a spec with one or a few things wrong.
TEMPLATES = {
    "methods": ["lora", "qdora", "full", "vblora"],
    "models": ["smollm2-135m", "smollm2-135m-hub"],
    "tasks": ["arc_easy", "arc_challenge", "gsm8k", "piqa"],
    "profiles": ["lora-sweep", "smoke"],
}


def _key_paths(doc: Any, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix] if prefix else []
    if isinstance(doc, dict):
        for key, value in doc.items():
            paths += _key_paths(value, (*prefix, key))
    return paths


@st.composite
def mutated_specs(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    name = draw(st.sampled_from(TEMPLATES[kind]))
    doc = yaml.safe_load((SHIPPED / kind / f"{name}.yaml").read_text())
    known = _key_paths(doc) + [(k,) for k in ("include", "adapter", "base", "training", "data", "variants")]
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(known))
        parent = doc
        for part in path[:-1]:
            parent = parent.get(part) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            continue
        action = draw(st.sampled_from(["replace", "delete", "add unknown key", "add nested garbage"]))
        if action == "replace":  # often a wrong type at a known key
            parent[path[-1]] = draw(YAML_VALUES)
        elif action == "delete":
            parent.pop(path[-1], None)
        elif action == "add unknown key":
            parent[draw(st.text(min_size=1, max_size=8))] = draw(YAML_VALUES)
        else:
            target = parent.get(path[-1])
            if isinstance(target, dict):
                target[draw(st.text(max_size=8))] = draw(YAML_VALUES)
            else:
                parent[path[-1]] = {draw(st.text(max_size=8)): draw(YAML_VALUES)}
    return doc


SHIPPED = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"


@pytest.fixture(scope="module")
def fuzz_specs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import shutil

    return Path(shutil.copytree(SHIPPED, tmp_path_factory.mktemp("fuzz") / "specs"))


def _load_or_spec_error(root: Path, kind: str) -> None:
    """Loading (and, for a profile, expanding) either works or raises SpecError, nothing else."""
    store = SpecStore(root)
    try:
        spec = store.get(kind, "fuzz")
        if kind == "profiles":
            for case in expand(store, "fuzz"):
                json.dumps(case.resolved(), default=str)
        else:
            plain(spec)
    except SpecError as err:
        assert "\n" not in str(err)


FUZZ = settings(
    deadline=None,
    max_examples=100,
    database=None,  # no .hypothesis/ folder in the checkout
    suppress_health_check=[HealthCheck.too_slow],
)


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_mutated_specs_load_or_raise_spec_error(fuzz_specs: Path, kind: str, data: st.DataObject) -> None:
    doc = data.draw(mutated_specs(kind))
    (fuzz_specs / kind / "fuzz.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    _load_or_spec_error(fuzz_specs, kind)


# Every block whose keys are free-form (passed on verbatim, or a partial override), each filled
# with garbage: a random mutation of a whole file rarely reaches them with the rest still valid.
BLOCKS = [
    ("methods", "lora", ("adapter",)),
    ("methods", "lora", ("adapter", "target_modules")),
    ("methods", "qdora", ("base",)),
    ("methods", "full", ("training",)),
    ("models", "smollm2-135m", ("adapter_overrides",)),
    ("models", "smollm2-135m", ("adapter_overrides", "vblora")),
    ("models", "smollm2-135m", ("source",)),
    ("tasks", "gsm8k", ("fields",)),
    ("tasks", "gsm8k", ("generation",)),
    ("tasks", "gsm8k", ("training",)),
    ("tasks", "arc_challenge", ("source",)),
    ("profiles", "lora-sweep", ("variants",)),
    ("profiles", "lora-sweep", ("variants", "lora-r4")),
    ("profiles", "lora-sweep", ("variants", "lora-r4", "adapter")),
    ("profiles", "lora-sweep", ("variants", "lora-r4", "include")),
    ("profiles", "smoke", ("training",)),
    ("profiles", "smoke", ("data",)),
    ("profiles", "smoke", ("eval",)),
    ("profiles", "smoke", ("methods",)),
]


@pytest.mark.parametrize(
    ("kind", "name", "path"), BLOCKS, ids=lambda v: ".".join(v) if isinstance(v, tuple) else v
)
@settings(deadline=None, max_examples=25, database=None)
@given(value=YAML_VALUES)
def test_garbage_in_any_block_loads_or_raises_spec_error(
    fuzz_specs: Path, kind: str, name: str, path: tuple[str, ...], value: Any
) -> None:
    doc = yaml.safe_load((SHIPPED / kind / f"{name}.yaml").read_text())
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    (fuzz_specs / kind / "fuzz.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    _load_or_spec_error(fuzz_specs, kind)


YAMLISH = st.lists(
    st.sampled_from(
        [
            "tuner: lora\n",
            "include: fuzz\n",
            "include: lora\n",
            "adapter:\n",
            "  r: 8\n",
            "  rr: 8\n",
            "training: {max_steps: 3}\n",
            "methods: [lora]\n",
            "models: [smollm2-135m]\n",
            "tasks: [sst2]\n",
            "description: ",
            "- ",
            "[",
            "]",
            "{",
            "}",
            ": ",
            ", ",
            "'",
            '"',
            "\n",
            "  ",
            "\t",
            "#",
            "&a ",
            "*a",
            "!!str ",
            "!!python/name:os.system ",
            "<<: ",
            "? ",
            "---\n",
            "...\n",
            "%YAML 1.2\n",
            "1e3",
            "-.inf",
            "null",
            "~",
            "\\",
            "|\n",
            ">-\n",
            "\x00",
            "\ufeff",
            "é",
        ]
    ),
    max_size=25,
).map("".join)


@FUZZ
@given(
    kind=st.sampled_from(KINDS),
    text=YAMLISH | st.text(st.characters(exclude_categories=["Cs"]), max_size=200),
)
def test_arbitrary_text_loads_or_raises_spec_error(fuzz_specs: Path, kind: str, text: str) -> None:
    (fuzz_specs / kind / "fuzz.yaml").write_text(text, encoding="utf-8")
    _load_or_spec_error(fuzz_specs, kind)


@settings(deadline=None, max_examples=40, database=None)
@given(kind=st.sampled_from(KINDS), data=st.binary(max_size=200))
def test_arbitrary_bytes_load_or_raise_spec_error(fuzz_specs: Path, kind: str, data: bytes) -> None:
    (fuzz_specs / kind / "fuzz.yaml").write_bytes(data)
    _load_or_spec_error(fuzz_specs, kind)


# --------------------------------------------------------------------------- semantics


def test_include_chains_merge_deeply(shipped_specs: Path) -> None:
    store = SpecStore(shipped_specs)
    lora, qlora, qdora = (store.get("methods", n) for n in ("lora", "qlora", "qdora"))
    # qdora = qlora + use_dora; qlora = lora over an nf4 base.
    assert qdora.tuner == "lora"
    assert qdora.adapter == {**lora.adapter, "use_dora": True}
    assert qdora.base == qlora.base
    assert qdora.base.quantization == "nf4"
    assert qdora.description != qlora.description  # its own key wins over the included one

    easy, challenge = store.get("tasks", "arc_easy"), store.get("tasks", "arc_challenge")
    assert challenge.source.path != easy.source.path
    assert plain(challenge.source) == {**plain(easy.source), "path": challenge.source.path}
    differ = {f for f, v in plain(challenge).items() if plain(easy)[f] != v}
    assert differ == {"name", "description", "source"}


def test_defaults_fill_what_a_spec_leaves_out(specs: Path) -> None:
    write(specs, "methods/m.yaml", "tuner: lora\n")
    write(
        specs, "profiles/p.yaml", "methods: [m]\nmodels: [smollm2-135m]\ntasks: [sst2]\ndata: {train: 300}\n"
    )
    store = SpecStore(specs)
    method = store.get("methods", "m")
    assert method.description == ""
    assert method.adapter == {}
    assert method.base.quantization == "none"
    assert method.base.compute_dtype == "bf16"
    assert store.get("models", "smollm2-135m").dtype == "fp32"
    # A partial block merges key by key over defaults.yaml.
    data = store.get("profiles", "p").data
    assert (data.train, data.held_out, data.seen) == (300, 50, 50)
    [case] = expand(store, "p")
    assert case.training.warmup_ratio == 0.1  # defaults.yaml, not the dataclass's 0.0
    assert case.eval.batch_size == 8


def test_adapter_block_stays_verbatim(specs: Path) -> None:
    text = """\
        tuner: lora
        adapter:
          r: 16
          lora_alpha: 32
          lora_dropout: 1e-1
          target_modules: [q_proj, v_proj]
          rank_pattern: {q_proj: 4, "model.layers.0.mlp": 8}
          init_lora_weights: gaussian
          layers_to_transform: null
        """
    write(specs, "methods/m.yaml", text)
    method = SpecStore(specs).get("methods", "m")
    expected = yaml.safe_load(textwrap.dedent(text))["adapter"]
    expected["lora_dropout"] = 0.1  # YAML 1.1 would read `1e-1` as a string; peft wants the number
    assert plain(method.adapter) == expected
    assert method.adapter["lora_dropout"] == 0.1
    assert isinstance(method.adapter["lora_dropout"], float)
    assert method.adapter["target_modules"] == ("q_proj", "v_proj")  # frozen: a list reads as a tuple


@pytest.mark.parametrize("name", ["lora", "vera", "oft", "adalora", "loha", "prefix_tuning"])
def test_shipped_adapter_blocks_are_the_files(shipped_specs: Path, name: str) -> None:
    doc = yaml.safe_load((shipped_specs / "methods" / f"{name}.yaml").read_text())
    assert plain(SpecStore(shipped_specs).get("methods", name).adapter) == doc.get("adapter", {})


def test_training_budget_resolution_order(specs: Path) -> None:
    """defaults < task < profile < method < command line, key by key."""
    write(
        specs,
        "tasks/t.yaml",
        "include: sst2\ntraining: {max_length: 11, batch_size: 2, learning_rate: 0.1}\n",
    )
    write(specs, "methods/m.yaml", "tuner: lora\ntraining: {learning_rate: 0.3, max_steps: 4}\n")
    profile(
        specs, methods=["m"], tasks=["t"], training={"batch_size": 3, "learning_rate": 0.2, "max_steps": 2}
    )
    store = SpecStore(specs)
    [case] = expand(store, "p", overrides={"max_steps": 5, "batch_size": None})
    budget = case.training
    assert budget.warmup_ratio == 0.1  # defaults.yaml
    assert budget.max_length == 11  # task over defaults
    assert budget.batch_size == 3  # profile over task (a None override is "not given")
    assert budget.learning_rate == 0.3  # method over profile
    assert budget.max_steps == 5  # command line over method
    args = (store, store.get("profiles", "p"), store.get("methods", "m"), store.get("tasks", "t"))
    assert resolve_training(*args).max_steps == 4


def test_a_methods_own_learning_rate_beats_the_profiles(specs: Path) -> None:
    profile(specs, methods=["full", "lora"], training={"learning_rate": 1e-3})
    rates = {c.method.name: c.training.learning_rate for c in expand(SpecStore(specs), "p")}
    assert rates == {"full": 2e-5, "lora": 1e-3}
    rates = {
        c.method.name: c.training.learning_rate
        for c in expand(SpecStore(specs), "p", overrides={"learning_rate": 0.5})
    }
    assert rates == {"full": 0.5, "lora": 0.5}


def test_inline_variants_of_a_sweep(shipped_specs: Path) -> None:
    store = SpecStore(shipped_specs)
    sweep = store.get("profiles", "lora-sweep")
    cases = expand(store, "lora-sweep")
    lora = store.get("methods", "lora")
    by_method = {c.method.name: c.method for c in cases}
    assert set(by_method) == set(sweep.methods)
    for rank in (4, 8, 16, 32, 128):
        variant = by_method[f"lora-r{rank}"]
        assert isinstance(variant, MethodSpec)
        assert variant.tuner == "lora"
        assert variant.adapter == {**lora.adapter, "r": rank, "lora_alpha": 2 * rank}
        assert variant.description == f"LoRA r={rank}, alpha={2 * rank}"
        assert variant.file == sweep.file
    assert "lora-r4-smollm2-135m-arc_easy" in ids(cases)


def test_model_adapter_overrides_apply_to_their_tuner_only(specs: Path) -> None:
    profile(specs, methods=["vblora", "lora"], models=["smollm2-135m", "smollm2-135m-hub"])
    store = SpecStore(specs)
    length = {
        (c.method.name, c.model.name): c.method.adapter.get("vector_length") for c in expand(store, "p")
    }
    assert length == {
        ("vblora", "smollm2-135m"): 192,  # the model's override
        ("vblora", "smollm2-135m-hub"): 256,  # the method's own value
        ("lora", "smollm2-135m"): None,
        ("lora", "smollm2-135m-hub"): None,
    }
    assert store.get("methods", "vblora").adapter["vector_length"] == 256  # the spec itself is untouched


@pytest.mark.parametrize("kind", KINDS)
def test_every_shipped_spec_loads(shipped_specs: Path, kind: str) -> None:
    store = SpecStore(shipped_specs)
    specs = store.all(kind)
    assert specs
    assert [s.name for s in specs] == sorted(p.stem for p in (shipped_specs / kind).glob("*.yaml"))
    assert all(s.description for s in specs)


@pytest.mark.parametrize("name", sorted(p.stem for p in (SHIPPED / "profiles").glob("*.yaml")))
def test_every_shipped_profile_expands(shipped_specs: Path, name: str) -> None:
    store = SpecStore(shipped_specs)
    spec = store.get("profiles", name)
    cases = expand(store, name)
    grids = [{"methods": spec.methods, "models": spec.models, "tasks": spec.tasks}]
    grids += [{**grids[0], **grid} for grid in spec.grids]
    expected = {(m, mo, t) for g in grids for m in g["methods"] for mo in g["models"] for t in g["tasks"]}
    assert len(set(ids(cases))) == len(cases) == len(expected)
    assert {(c.method.name, c.model.name, c.task.name) for c in cases} == expected
    for case in cases:
        assert case.case_id == f"{case.method.name}-{case.model.name}-{case.task.name}"
        json.dumps(case.resolved())  # records store the resolved spec as JSON


def test_cases_are_grouped_by_base_model_variant(specs: Path) -> None:
    methods = ["qlora", "lora", "lora-8bit", "qdora", "base", "full", "dora"]
    profile(specs, methods=methods, models=["smollm2-135m-hub", "smollm2-135m"], tasks=["sst2", "arc_easy"])
    cases = expand(SpecStore(specs), "p")
    blocks = [c.variant_key for c in cases]
    seen: list[tuple[str, str, bool, str]] = []
    for key in blocks:
        if not seen or seen[-1] != key:
            assert key not in seen, f"variant {key} is split in two blocks"
            seen.append(key)
    assert {(k[0], k[1]) for k in seen} == {
        (m, q) for m in ("smollm2-135m", "smollm2-135m-hub") for q in ("none", "nf4", "int8")
    }
    first_block = [c for c in cases if c.variant_key == seen[0]]
    assert first_block[0].method.name == "base"  # the reference row first, full precision first
    assert seen[0][1] == "none"


def test_seeds_multiply_the_cases(shipped_specs: Path) -> None:
    store = SpecStore(shipped_specs)
    one = expand(store, "smoke")
    two = expand(store, "smoke", seeds=[0, 1])
    assert len(two) == 2 * len(one)
    assert ids(two)[:2] == [f"{ids(one)[0]}-seed0", f"{ids(one)[0]}-seed1"]
    assert [c.training.seed for c in two[:2]] == [0, 1]
    assert ids(expand(store, "smoke", seeds=[7])) == ids(one)  # one seed: ids stay short


def test_specs_are_frozen(shipped_specs: Path) -> None:
    method = SpecStore(shipped_specs).get("methods", "lora")
    with pytest.raises(TypeError):
        method.adapter["r"] = 1  # type: ignore[index]
    with pytest.raises(AttributeError):
        method.tuner = "vera"  # type: ignore[misc]


# --------------------------------------------------------------------------- extra grids


def test_grids_add_blocks_to_the_matrix_each_case_once(specs: Path) -> None:
    profile(
        specs,
        methods=["base", "lora"],
        tasks=["sst2", "arc_easy"],
        grids=[{"methods": ["ia3", "lora"], "tasks": ["sst2"]}, {"methods": ["base"]}],
    )
    got = ids(expand(SpecStore(specs), "p"))
    assert sorted(got) == sorted(
        f"{m}-smollm2-135m-{t}"
        for m, t in [
            ("base", "sst2"),
            ("base", "arc_easy"),
            ("lora", "sst2"),
            ("lora", "arc_easy"),
            ("ia3", "sst2"),
        ]
    )


@pytest.mark.parametrize(
    ("grids", "key", "message"),
    [
        ([{"method": ["lora"]}], "grids[0].method", "unknown key; expected methods, models or tasks"),
        ([{"tasks": []}], "grids[0].tasks", "expected a non-empty list of task names"),
        ([{}], "grids[0]", "expected a mapping"),
        ([{"methods": ["lora"]}, {"tasks": ["sst3"]}], "grids[1].tasks", "did you mean 'sst2'"),
    ],
)
def test_a_bad_grid_names_its_key(specs: Path, grids: Any, key: str, message: str) -> None:
    path = profile(specs, grids=grids)
    with pytest.raises(SpecError) as caught:
        expand(SpecStore(specs), "p")
    assert (caught.value.file, caught.value.key) == (str(path), key)
    assert message in caught.value.expected
