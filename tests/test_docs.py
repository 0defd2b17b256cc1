"""The documentation stays true to the code: the generated spec key reference is current, every
spec key has a meaning, every relative link resolves, and the README stays a front door."""

from __future__ import annotations

import dataclasses
import doctest
import re
import sys
from pathlib import Path

import pytest

from peftcore.spec import reference

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 220

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def test_spec_key_reference_is_current() -> None:
    committed = (ROOT / "docs" / "spec-keys.md").read_text(encoding="utf-8")
    assert committed == reference.render(), f"docs/spec-keys.md is stale; regenerate it: {reference.COMMAND}"


def test_every_spec_key_has_a_meaning() -> None:
    """A key without a comment on or above its field would be a row without a meaning."""
    missing = []
    for block in reference.blocks():
        comments = reference.field_comments(block.cls)
        for field in dataclasses.fields(block.cls):
            if not field.metadata.get("internal") and not comments.get(field.name):
                missing.append(f"{block.cls.__module__}.{block.cls.__name__}.{field.name}")
    assert not missing, "add a comment on or just above each field: " + ", ".join(missing)


def test_every_block_has_a_description() -> None:
    undescribed = [block.title for block in reference.blocks() if not block.description]
    assert not undescribed, f"give these spec classes a docstring: {undescribed}"


def test_comments_are_read_from_above_and_beside_a_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Comment lines right above a field, then the one on its line; a blank line or code ends
    the block above; a field without either gets ""."""
    import importlib.util

    source = tmp_path / "commented.py"
    source.write_text(
        "from dataclasses import dataclass\n\n\n"
        "@dataclass\n"
        "class Commented:\n"
        '    """A docstring."""\n\n'
        "    # not about a: a blank line follows\n\n"
        "    a: int = 1\n"
        "    # first line\n"
        "    # second line\n"
        "    b: int = 2  # and beside\n"
        "    c: str = '# not a comment'\n"
        "    d: int = 3  # only beside\n"
    )
    spec = importlib.util.spec_from_file_location("commented", source)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "commented", module)  # where inspect finds a class's file
    spec.loader.exec_module(module)
    assert reference.field_comments(module.Commented) == {
        "a": "",
        "b": "first line second line and beside",
        "c": "",
        "d": "only beside",
    }
    assert reference.class_description(module.Commented) == "A docstring."


def test_reference_doctests() -> None:
    assert doctest.testmod(reference).failed == 0


def test_main_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "spec-keys.md"
    assert reference.main(["--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == reference.render()
    assert reference.main([]) == 0
    assert capsys.readouterr().out.endswith(reference.render())


def _headings(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    anchors: set[str] = set()
    for title in re.findall(r"^#{1,6} +(.+?) *$", text, re.MULTILINE):
        anchor = reference.slug(title)
        n = 0
        while (unique := anchor if n == 0 else f"{anchor}-{n}") in anchors:  # GitHub numbers repeats
            n += 1
        anchors.add(unique)
    return anchors


def _relative_links(page: Path) -> list[str]:
    text = _CODE_SPAN.sub("``", _FENCE.sub("", page.read_text(encoding="utf-8")))
    return [t for t in _LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", t, re.IGNORECASE)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link names a file that exists, and an anchor into a Markdown page names one
    of its headings."""
    broken = []
    for target in _relative_links(page):
        path_part, _, anchor = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and path.suffix == ".md" and anchor not in _headings(path):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


def test_link_check_sees_links() -> None:
    """The link test would pass on a page whose links it cannot parse; the README has several."""
    links = _relative_links(ROOT / "README.md")
    assert "docs/measurements.md" in links
    assert "docs/results.md#resuming-rerunning-seeds" in links


def test_readme_stays_a_front_door() -> None:
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, (
        f"README.md has {len(lines)} lines (at most {README_MAX_LINES}): move a topic to docs/"
    )
