"""The optional LLM judge's settings (a profile's ``eval.judge``), parsed when specs load.

The client that uses them is :mod:`peftcore.score.judge`. The API key itself is never part of
a spec: ``api_key_env`` names the environment variable that holds it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftcore.errors import SpecError


@dataclass(frozen=True)
class JudgeConfig:
    """An OpenAI-compatible chat endpoint that scores generated answers (off unless set)."""

    base_url: str  # http(s) URL the requests go to ({base_url}/chat/completions), e.g. .../v1
    model: str  # the model name sent to the endpoint
    # Name of the environment variable holding the API key (never the key itself); None: no key.
    api_key_env: str | None = None
    timeout_seconds: float = 60.0  # per request
    # Attempts after the first when a request fails (timeout, connection, 429/5xx, malformed reply).
    max_retries: int = 3

    @classmethod
    def from_spec(cls, value: Any, file: str | Path | None, key: str = "eval.judge") -> JudgeConfig:
        """Parse a profile's ``eval.judge`` block when the spec loads (SpecError names file and key)."""
        try:
            return cls.from_mapping(value, key)
        except SpecError as err:
            raise SpecError(file, err.key, err.expected) from None

    def to_spec(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], where: str = "eval.judge") -> JudgeConfig:
        """Build from a spec block; unknown keys and wrong types raise ``SpecError`` naming the key.

        >>> JudgeConfig.from_mapping({"base_url": "http://localhost:8000/v1/", "model": "m"}).base_url
        'http://localhost:8000/v1'
        """
        if not isinstance(mapping, Mapping):
            raise SpecError(None, where, f"expected a mapping, got {type(mapping).__name__}")
        known = ("base_url", "model", "api_key_env", "timeout_seconds", "max_retries")
        for key in mapping:
            if key not in known:
                raise SpecError(None, f"{where}.{key}", f"unknown key; expected one of {', '.join(known)}")
        for key in ("base_url", "model"):
            if not isinstance(mapping.get(key), str) or not mapping[key].strip():
                raise SpecError(None, f"{where}.{key}", "required, a non-empty string")
        base_url = mapping["base_url"].strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")):
            raise SpecError(None, f"{where}.base_url", f"expected an http(s) URL, got {base_url!r}")
        api_key_env = mapping.get("api_key_env")
        if api_key_env is not None and (not isinstance(api_key_env, str) or not api_key_env):
            raise SpecError(None, f"{where}.api_key_env", "expected the name of an environment variable")
        timeout = mapping.get("timeout_seconds", cls.timeout_seconds)
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise SpecError(None, f"{where}.timeout_seconds", f"expected a positive number, got {timeout!r}")
        retries = mapping.get("max_retries", cls.max_retries)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise SpecError(None, f"{where}.max_retries", f"expected an integer >= 0, got {retries!r}")
        return cls(base_url, mapping["model"].strip(), api_key_env, float(timeout), retries)
