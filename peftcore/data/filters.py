"""Text filters a field path may end in (``ctx | drop_bracket_tags``), by name.

:data:`FILTERS` is the registry; :func:`register_filter` adds to it. A filter takes the text
of one field value and returns the cleaned text.
"""

from __future__ import annotations

import re
from collections.abc import Callable

FILTERS: dict[str, Callable[[str], str]] = {}


def register_filter(name: str) -> Callable[[Callable[[str], str]], Callable[[str], str]]:
    """Add a text filter usable in a field path (``path | name``); names must be new.

    Used as a decorator; raises ``ValueError`` when ``name`` is already registered.
    """

    def add(fn: Callable[[str], str]) -> Callable[[str], str]:
        if name in FILTERS:
            raise ValueError(f"filter {name!r} is already registered")
        FILTERS[name] = fn
        return fn

    return add


@register_filter("strip")
def _strip(text: str) -> str:
    """Leading and trailing whitespace removed."""
    return text.strip()


_BRACKET_TAG = re.compile(r"\[.*?\]")


@register_filter("drop_bracket_tags")
def drop_bracket_tags(text: str) -> str:
    """Scraping artifacts removed, as lm-evaluation-harness cleans HellaSwag's WikiHow text.

    >>> drop_bracket_tags("[header] How to fold a shirt [title] Lay it flat.")
    'How to fold a shirt. Lay it flat.'
    """
    text = text.strip().replace(" [title]", ". ")
    text = _BRACKET_TAG.sub("", text)
    return text.replace("  ", " ").strip()
