"""Optional LLM-as-judge: scores answers 1-5 for correctness, completeness and faithfulness.

Off unless a profile sets ``eval.judge``. The judge is any OpenAI-compatible chat endpoint
(``POST {base_url}/chat/completions``), reached with the standard library only::

    eval:
      judge:
        base_url: http://127.0.0.1:8000/v1
        model: qwen2.5-7b-instruct
        api_key_env: JUDGE_API_KEY     # the variable's name; the key itself stays in the environment
        timeout_seconds: 60
        max_retries: 3

``Judge(JudgeConfig.from_mapping(spec.eval.judge)).score_many(questions, answers, references)``
returns ``{"judge_correctness": mean, "judge_completeness": mean, "judge_faithfulness": mean}``,
the names ``peftcore.score.metrics`` registers. Every verdict is cached on disk under
``$PEFTCORE_CACHE/judge/`` (default ``~/.cache/peftcore``), so a rerun sends no request.

The API key is read from the environment at each request and is never written to a cache file,
an exception message or a log.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import math
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from peftcore.errors import PeftcoreError
from peftcore.spec.judge import JudgeConfig
from peftcore.storage import atomic_write_json, cache_root

CRITERIA = ("correctness", "completeness", "faithfulness")

# Bump RUBRIC_VERSION whenever the prompt below changes: it is part of the cache key, so old
# verdicts are not reused for a different question to the judge.
RUBRIC_VERSION = "1"
RUBRIC_SYSTEM_PROMPT = """\
You grade an answer to a question, comparing it with a reference answer.
Score each criterion with an integer from 1 (worst) to 5 (best):
- correctness: the answer states the same facts as the reference, without errors.
- completeness: the answer covers everything the question asks that the reference contains.
- faithfulness: the answer makes no claim unsupported by the question or the reference.
Reply with exactly one JSON object and nothing else (no code fence, no explanation):
{"correctness": <1-5>, "completeness": <1-5>, "faithfulness": <1-5>}"""
RUBRIC_USER_TEMPLATE = """\
Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}"""

BACKOFF_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 30.0
_REPLY_EXCERPT_CHARS = 200


class JudgeError(PeftcoreError):
    """The judge could not give a verdict: a rejected request, or no valid reply after retries."""


class _Retryable(Exception):
    """A failure worth another attempt (timeout, connection, 429/5xx, malformed reply)."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def parse_verdict(content: str) -> dict[str, int]:
    """The scores in a judge reply, parsed strictly; ``ValueError`` saying what is wrong.

    The reply must be exactly one JSON object with the three criteria as integers 1..5 and no
    other key (surrounding whitespace is allowed, a code fence is not).

    >>> parse_verdict('{"correctness": 5, "completeness": 4, "faithfulness": 5}')
    {'correctness': 5, 'completeness': 4, 'faithfulness': 5}
    """
    try:
        verdict = json.loads(content)
    except ValueError:
        raise ValueError("reply is not a JSON object") from None
    if not isinstance(verdict, dict):
        raise ValueError(f"reply is JSON {type(verdict).__name__}, not an object")
    missing = [key for key in CRITERIA if key not in verdict]
    extra = sorted(set(verdict) - set(CRITERIA))
    if missing or extra:
        raise ValueError(f"reply keys wrong (missing: {missing}, unexpected: {extra})")
    for key in CRITERIA:
        value = verdict[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 5:
            raise ValueError(f"{key} must be an integer 1..5, got {value!r}")
    return {key: verdict[key] for key in CRITERIA}


def default_cache_dir() -> Path:
    return cache_root() / "judge"


class Judge:
    """Scores answers with the configured judge; verdicts are cached on disk.

    ``sleep`` is injectable so tests need not wait out the backoff; ``cache_dir`` defaults to
    ``$PEFTCORE_CACHE/judge``. Construction fails at once if ``api_key_env`` names an unset
    variable, rather than on the first request.
    """

    def __init__(
        self,
        config: JudgeConfig,
        *,
        cache_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config
        self.cache_dir = cache_dir if cache_dir is not None else default_cache_dir()
        self._sleep = sleep
        self.requests_sent = 0
        if config.api_key_env is not None and not os.environ.get(config.api_key_env):
            raise JudgeError(f"the judge's API key variable {config.api_key_env} (api_key_env) is not set")

    # ------------------------------------------------------------------ public

    def score(self, question: str, answer: str, reference: str | Sequence[str] | None) -> dict[str, int]:
        """Scores 1-5 of one answer: ``{"correctness": .., "completeness": .., "faithfulness": ..}``."""
        references = _reference_list(reference)
        path = self.cache_dir / f"{self.cache_key(question, answer, references)}.json"
        cached = _read_cached(path)
        if cached is not None:
            return cached
        scores = self._request_verdict(question, answer, references)
        atomic_write_json(
            path,
            {
                "rubric_version": RUBRIC_VERSION,
                "model": self.config.model,
                "base_url": self.config.base_url,
                "scores": scores,
            },
        )
        return scores

    def score_many(
        self,
        questions: Sequence[str],
        answers: Sequence[str],
        references: Sequence[str | Sequence[str] | None],
    ) -> dict[str, float]:
        """Mean scores over examples, named as registered metrics (``judge_correctness``, ...)."""
        if not len(questions) == len(answers) == len(references):
            raise ValueError(
                f"{len(questions)} questions, {len(answers)} answers, {len(references)} references"
            )
        if not questions:
            raise ValueError("no examples to judge")
        verdicts = [self.score(q, a, r) for q, a, r in zip(questions, answers, references, strict=True)]
        return {f"judge_{key}": math.fsum(v[key] for v in verdicts) / len(verdicts) for key in CRITERIA}

    def cache_key(self, question: str, answer: str, references: Sequence[str]) -> str:
        """sha256 of what decides a verdict: the texts, the judge model and endpoint, the rubric."""
        identity = [
            question,
            answer,
            list(references),
            self.config.model,
            self.config.base_url,
            RUBRIC_VERSION,
        ]
        return hashlib.sha256(json.dumps(identity, ensure_ascii=False).encode("utf-8")).hexdigest()

    # ------------------------------------------------------------------ requests

    def _request_verdict(self, question: str, answer: str, references: Sequence[str]) -> dict[str, int]:
        body = {
            "model": self.config.model,
            "temperature": 0,
            "messages": [
                {"role": "system", "content": RUBRIC_SYSTEM_PROMPT},
                {
                    "role": "user",
                    "content": RUBRIC_USER_TEMPLATE.format(
                        question=question,
                        reference="\n".join(references) if references else "(none)",
                        answer=answer,
                    ),
                },
            ],
        }
        attempts = self.config.max_retries + 1
        last = ""
        for attempt in range(attempts):
            try:
                content = self._post(body)
                try:
                    return parse_verdict(content)
                except ValueError as err:
                    raise _Retryable(f"malformed verdict ({err}): {_excerpt(content)}") from None
            except _Retryable as err:
                last = str(err)
                if attempt + 1 < attempts:
                    delay = min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2**attempt)
                    if err.retry_after is not None:
                        delay = min(MAX_BACKOFF_SECONDS, max(delay, err.retry_after))
                    self._sleep(delay)
        raise JudgeError(
            self._redact(f"{self._who()}: no valid verdict after {attempts} attempts; last: {last}")
        )

    def _post(self, body: Mapping[str, Any]) -> str:
        """The message content of one chat completion; ``_Retryable`` or ``JudgeError`` on failure."""
        headers = {"Content-Type": "application/json", "User-Agent": "peftcore-judge"}
        key = self._api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            f"{self.config.base_url}/chat/completions",
            data=json.dumps(body).encode("utf-8"),
            headers=headers,
            method="POST",
        )
        self.requests_sent += 1
        try:
            with urllib.request.urlopen(request, timeout=self.config.timeout_seconds) as response:
                raw = response.read()
        except urllib.error.HTTPError as err:
            with err:
                detail = _excerpt(_read_quietly(err))
            if err.code == 429 or err.code == 408 or err.code >= 500:
                raise _Retryable(f"HTTP {err.code}: {detail}", _retry_after(err.headers)) from None
            raise JudgeError(
                self._redact(f"{self._who()} rejected the request: HTTP {err.code}: {detail}")
            ) from None
        except (OSError, http.client.HTTPException) as err:  # URLError, timeouts, resets
            reason = getattr(err, "reason", None) or err
            kind = "timed out" if isinstance(reason, TimeoutError) else "connection failed"
            raise _Retryable(f"{kind} ({type(reason).__name__}: {reason})") from None
        try:
            reply = json.loads(raw)
            content = reply["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            raise _Retryable(f"not a chat completion: {_excerpt(raw.decode('utf-8', 'replace'))}") from None
        if not isinstance(content, str):
            raise _Retryable(f"message content is {type(content).__name__}, not text")
        return content

    def _api_key(self) -> str | None:
        return os.environ.get(self.config.api_key_env) if self.config.api_key_env else None

    def _redact(self, text: str) -> str:
        key = self._api_key()
        return text.replace(key, "***") if key else text

    def _who(self) -> str:
        return f"judge {self.config.model!r} at {self.config.base_url}"


def _reference_list(reference: str | Sequence[str] | None) -> list[str]:
    if reference is None:
        return []
    return [reference] if isinstance(reference, str) else list(reference)


def _read_cached(path: Path) -> dict[str, int] | None:
    """A cached verdict, or None when absent or unusable (then it is asked again and rewritten)."""
    try:
        scores = json.loads(path.read_text(encoding="utf-8"))["scores"]
        return parse_verdict(json.dumps(scores))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_quietly(err: urllib.error.HTTPError) -> str:
    try:
        return err.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return ""


def _retry_after(headers: Any) -> float | None:
    try:
        value = float(headers.get("Retry-After", ""))
    except (TypeError, ValueError, AttributeError):
        return None
    return value if math.isfinite(value) and value >= 0 else None


def _excerpt(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _REPLY_EXCERPT_CHARS else text[:_REPLY_EXCERPT_CHARS] + "..."
