"""``peftcore list``: every spec with its one-line description; broken specs as error lines."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from peftcore.cli import main
from peftcore.spec import KINDS, SpecStore
from peftcore.spec.cases import expand


def run_list(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, list[str], str]:
    code = main(["list", *args])
    out, err = capsys.readouterr()
    return code, out.splitlines(), err


def test_lists_every_spec_with_its_description(
    shipped_specs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, err = run_list(capsys, "--specs", str(shipped_specs))
    assert (code, err) == (0, "")
    store = SpecStore(shipped_specs)
    headers = [line for line in lines if not line.startswith(" ")]
    assert headers == [f"{kind}:" for kind in KINDS]
    for kind in KINDS:
        start = lines.index(f"{kind}:")
        rows = lines[start + 1 : start + 1 + len(store.names(kind))]
        for name, row in zip(store.names(kind), rows, strict=True):
            spec = store.get(kind, name)
            assert row.split()[0] == name
            assert spec.description in row
            assert "!!" not in row


def test_profiles_show_their_case_count(shipped_specs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_list(capsys, "profiles", "--specs", str(shipped_specs))
    assert code == 0
    assert lines[0] == "profiles:"
    count = len(expand(SpecStore(shipped_specs), "smoke"))  # its grids included
    [row] = [line for line in lines if line.split()[0] == "smoke"]
    assert row.endswith(f" = {count} cases]")


def test_one_kind_only(shipped_specs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run_list(capsys, "methods", "--specs", str(shipped_specs))
    assert code == 0
    assert lines[0] == "methods:"
    assert len(lines) == 1 + len(SpecStore(shipped_specs).names("methods"))
    assert not any(line.endswith(":") for line in lines[1:])


def test_a_broken_spec_is_an_error_line(specs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (specs / "methods" / "vera.yaml").write_text("tuner: vera\nadapter: {rr: 8}\n")
    code, lines, _ = run_list(capsys, "--specs", str(specs))
    assert code == 1
    [row] = [line for line in lines if line.split()[0] == "vera"]
    assert row.split(None, 1)[1] == f"!! {specs / 'methods' / 'vera.yaml'}: key 'adapter.rr': " + (
        "not a VeraConfig keyword (peft); did you mean 'r'?"
    )
    # Everything else is still listed.
    assert any(line.split()[0] == "lora" and "!!" not in line for line in lines)
    # A profile that lists vera cannot expand: its line is an error too.
    profiles = lines[lines.index("profiles:") :]
    [full] = [line for line in profiles if line.split()[0] == "full"]
    assert "!!" in full


def test_a_profile_naming_a_missing_method_is_an_error_line(
    specs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (specs / "profiles" / "p.yaml").write_text("methods: [lorra]\nmodels: [smollm2-135m]\ntasks: [sst2]\n")
    code, lines, _ = run_list(capsys, "profiles", "--specs", str(specs))
    assert code == 1
    [row] = [line for line in lines if line.split()[0] == "p"]
    assert f"!! {specs / 'profiles' / 'p.yaml'}: key 'methods': unknown method 'lorra'" in row


@pytest.mark.parametrize(
    ("kind", "name", "edit", "message"),
    [
        (
            "tasks",
            "sst2",
            ("prompt: ", 'prompt: "{sentense}" # '),
            "key 'prompt': template names field {sentense}, which is not in fields",
        ),
        (
            "tasks",
            "sst2",
            ("description:", "expect: {accuracy: {min: high}}\ndescription:"),
            "key 'expect.accuracy.min': expected a number, got 'high'",
        ),
        (
            "profiles",
            "smoke",
            ("expect:\n", "expect:\n  accuracyy: {min: 0.3}\n"),
            "key 'expect.accuracyy': unknown metric or cost figure 'accuracyy'",
        ),
        (
            "profiles",
            "smoke",
            ("compare:\n", "compare:\n  - {metric: f1, case: lora, baseline: base, must: win}\n"),
            "key 'compare[0].must': expected one of beat, below, above, got 'win'",
        ),
        (
            "profiles",
            "smoke",
            ("data:\n", "eval: {judge: {base_url: 'ftp://judge', model: m}}\ndata:\n"),
            "key 'eval.judge.base_url': expected an http(s) URL, got 'ftp://judge'",
        ),
    ],
    ids=["template", "task expect", "profile expect", "compare rule", "judge"],
)
def test_spec_mistakes_that_need_no_data_are_error_lines(
    specs: Path, capsys: pytest.CaptureFixture[str], kind: str, name: str, edit: tuple[str, str], message: str
) -> None:
    """Templates, gates and the judge block are checked when specs load, so `peftcore list` shows
    them (as collection does), with the file and the key."""
    path = specs / kind / f"{name}.yaml"
    text = path.read_text()
    assert edit[0] in text
    path.write_text(text.replace(edit[0], edit[1], 1))
    code, lines, _ = run_list(capsys, kind, "--specs", str(specs))
    assert code == 1
    [row] = [line for line in lines if line.split()[0] == name]
    assert f"!! {path}: {message}" in row


@pytest.mark.parametrize(
    ("defaults", "message"),
    [
        (None, "not a spec directory: defaults.yaml is missing"),
        ("training: [1]\n", "key 'training': expected a mapping"),
    ],
)
def test_an_unusable_spec_directory_is_one_error_line(
    specs: Path, capsys: pytest.CaptureFixture[str], defaults: str | None, message: str
) -> None:
    if defaults is None:
        (specs / "defaults.yaml").unlink()
    else:
        (specs / "defaults.yaml").write_text(defaults)
    code, lines, err = run_list(capsys, "--specs", str(specs))
    assert code == 2
    assert lines == []
    assert err.count("\n") == 1
    assert err.startswith("peftcore list: error: ")
    assert message in err


@pytest.mark.slow
def test_list_does_not_import_torch(shipped_specs: Path, tmp_path: Path) -> None:
    # A fresh interpreter: this test session may well have imported torch already. A cold cache
    # reads each task's source once (a save_to_disk folder through `datasets`) and never needs
    # torch; a warm one reads nothing heavy at all.
    script = (
        "import sys\n"
        "from peftcore.cli import main\n"
        f"code = main(['list', '--specs', {str(shipped_specs)!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'datasets') if m in sys.modules]\n"
        "print('HEAVY', heavy)\n"
        "sys.exit(code)\n"
    )
    env = {**os.environ, "PEFTCORE_CACHE": str(tmp_path / "cache")}
    outputs = []
    for _ in ("cold", "warm"):
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False, env=env
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.splitlines()[-1])
    cold, warm = outputs
    assert not {"torch", "transformers", "peft"} & set(ast.literal_eval(cold.removeprefix("HEAVY ")))
    assert warm == "HEAVY []"
