"""The LLM judge against a scripted OpenAI-compatible server on 127.0.0.1: replies, timeouts,
error statuses, garbage, retries with backoff, the verdict cache, and the API key's secrecy."""

from __future__ import annotations

import hashlib
import http.server
import json
import socket
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from peftcore.errors import SpecError
from peftcore.score import judge as judge_module
from peftcore.score.judge import (
    RUBRIC_SYSTEM_PROMPT,
    RUBRIC_USER_TEMPLATE,
    RUBRIC_VERSION,
    Judge,
    JudgeConfig,
    JudgeError,
    parse_verdict,
)
from peftcore.score.metrics import METRICS

SECRET = "sk-test-5ecret-do-not-leak"
GOOD = '{"correctness": 4, "completeness": 3, "faithfulness": 5}'


@dataclass
class Script:
    """What the fake server answers, one action per request; a valid verdict once it runs out.

    Actions: ("ok", content) a chat completion with that message content; ("status", code,
    body[, headers]) an error status; ("raw", body) a 200 that is not a chat completion;
    ("sleep", seconds) answer valid, but only after that long.
    """

    actions: list[tuple[Any, ...]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _completion(content: str) -> bytes:
    return json.dumps(
        {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            script.requests.append(
                {"path": self.path, "headers": dict(self.headers), "body": json.loads(body)}
            )
            action = script.actions.pop(0) if script.actions else ("ok", GOOD)
            status, payload, headers = 200, b"", dict[str, str]()
            if action[0] == "ok":
                payload = _completion(action[1])
            elif action[0] == "raw":
                payload = action[1].encode()
            elif action[0] == "status":
                status, payload = action[1], action[2].encode()
                headers = action[3] if len(action) > 3 else {}
            elif action[0] == "sleep":
                script.release.wait(action[1])
                payload = _completion(GOOD)
            try:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request: Any, client_address: Any) -> None:
            pass

    httpd = Server(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", script
    finally:
        script.release.set()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_judge(
    server: tuple[str, Script], sleeps: list[float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    base_url, _ = server
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("JUDGE_TEST_KEY", SECRET)

    def make(**overrides: Any) -> Judge:
        mapping = {
            "base_url": base_url,
            "model": "judge-model",
            "api_key_env": "JUDGE_TEST_KEY",
            "timeout_seconds": 2,
            "max_retries": 2,
            **overrides,
        }
        return Judge(JudgeConfig.from_mapping(mapping), sleep=sleeps.append)

    return make


def _cache_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache" / "judge").glob("*"))


# --------------------------------------------------------------------------- requests and replies


def test_a_normal_reply(make_judge: Any, server: tuple[str, Script], sleeps: list[float]) -> None:
    _, script = server
    scores = make_judge().score("Capital of France?", "Paris", "Paris")
    assert scores == {"correctness": 4, "completeness": 3, "faithfulness": 5}
    [request] = script.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == f"Bearer {SECRET}"
    body = request["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert body["messages"][0] == {"role": "system", "content": RUBRIC_SYSTEM_PROMPT}
    user = body["messages"][1]["content"]
    assert "Capital of France?" in user and "Answer to grade:\nParis" in user
    assert sleeps == []


def test_no_authorization_header_without_a_key(make_judge: Any, server: tuple[str, Script]) -> None:
    _, script = server
    make_judge(api_key_env=None).score("q", "a", None)
    assert "Authorization" not in script.requests[0]["headers"]
    assert "Reference answer:\n(none)" in script.requests[0]["body"]["messages"][1]["content"]


def test_a_slow_reply_times_out_then_the_retry_succeeds(
    make_judge: Any, server: tuple[str, Script], sleeps: list[float]
) -> None:
    _, script = server
    script.actions = [("sleep", 3.0)]
    scores = make_judge(timeout_seconds=0.3).score("q", "a", "r")
    assert scores["correctness"] == 4
    assert len(script.requests) == 2
    assert sleeps == [1.0]


def test_server_errors_are_retried_with_exponential_backoff(
    make_judge: Any, server: tuple[str, Script], sleeps: list[float]
) -> None:
    _, script = server
    script.actions = [("status", 500, "oops"), ("status", 503, "busy")]
    assert make_judge().score("q", "a", "r")["faithfulness"] == 5
    assert len(script.requests) == 3
    assert sleeps == [1.0, 2.0]


def test_429_honours_retry_after(make_judge: Any, server: tuple[str, Script], sleeps: list[float]) -> None:
    _, script = server
    script.actions = [("status", 429, "slow down", {"Retry-After": "7"})]
    make_judge().score("q", "a", "r")
    assert sleeps == [7.0]


def test_a_400_fails_at_once(make_judge: Any, server: tuple[str, Script], sleeps: list[float]) -> None:
    _, script = server
    script.actions = [("status", 400, '{"error": "unknown model judge-model"}')]
    with pytest.raises(JudgeError) as info:
        make_judge().score("q", "a", "r")
    message = str(info.value)
    assert message.startswith("judge 'judge-model' at http://127.0.0.1:")
    assert "rejected the request: HTTP 400: " in message and "unknown model judge-model" in message
    assert "\n" not in message
    assert len(script.requests) == 1 and sleeps == []


@pytest.mark.parametrize(
    "bad",
    [
        ("ok", "The answer looks right. 5/5"),  # not JSON
        ("ok", '{"correctness": 6, "completeness": 3, "faithfulness": 5}'),  # out of range
        ("ok", '{"correctness": 4, "completeness": 3}'),  # missing key
        ("ok", f"```json\n{GOOD}\n```"),  # fenced
        ("raw", "<html>bad gateway</html>"),  # not a chat completion
        ("raw", '{"choices": []}'),
    ],
)
def test_garbage_is_rejected_and_retried(
    make_judge: Any, server: tuple[str, Script], sleeps: list[float], bad: tuple[str, str]
) -> None:
    _, script = server
    script.actions = [bad]
    assert make_judge().score("q", "a", "r") == parse_verdict(GOOD)
    assert len(script.requests) == 2 and sleeps == [1.0]


def test_a_clear_failure_after_max_retries(
    make_judge: Any, server: tuple[str, Script], sleeps: list[float], tmp_path: Path
) -> None:
    _, script = server
    script.actions = [("ok", "not json")] * 2 + [
        ("ok", '{"correctness": 0, "completeness": 3, "faithfulness": 5}')
    ]
    with pytest.raises(JudgeError) as info:
        make_judge(max_retries=2).score("q", "a", "r")
    message = str(info.value)
    assert (
        "no valid verdict after 3 attempts; last: malformed verdict (correctness must be an integer 1..5"
        in message
    )
    assert len(script.requests) == 3
    assert sleeps == [1.0, 2.0]
    assert _cache_files(tmp_path) == []  # a failure is not cached


def test_connection_refused_is_retried_then_fails(
    tmp_path: Path, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    config = JudgeConfig(f"http://127.0.0.1:{port}/v1", "m", max_retries=1, timeout_seconds=2)
    with pytest.raises(JudgeError, match="no valid verdict after 2 attempts; last: connection failed"):
        Judge(config, cache_dir=tmp_path, sleep=sleeps.append).score("q", "a", "r")
    assert sleeps == [1.0]


# --------------------------------------------------------------------------- cache


def test_the_cache_makes_a_rerun_free(make_judge: Any, server: tuple[str, Script], tmp_path: Path) -> None:
    _, script = server
    first = make_judge().score("q", "a", ["r1", "r2"])
    again = make_judge()  # a new process would build a new Judge
    assert again.score("q", "a", ["r1", "r2"]) == first
    assert len(script.requests) == 1 and again.requests_sent == 0
    [cached] = _cache_files(tmp_path)
    assert json.loads(cached.read_text())["scores"] == first
    # anything that changes the verdict's identity asks again
    make_judge().score("q", "another answer", ["r1", "r2"])
    make_judge(model="other-judge").score("q", "a", ["r1", "r2"])
    assert len(script.requests) == 3 and len(_cache_files(tmp_path)) == 3


def test_a_damaged_cache_file_is_asked_again(
    make_judge: Any, server: tuple[str, Script], tmp_path: Path
) -> None:
    _, script = server
    make_judge().score("q", "a", "r")
    [cached] = _cache_files(tmp_path)
    cached.write_text("{truncated")
    assert make_judge().score("q", "a", "r") == parse_verdict(GOOD)
    assert len(script.requests) == 2
    assert json.loads(cached.read_text())["scores"] == parse_verdict(GOOD)


def test_score_many_gives_the_registered_judge_metrics(make_judge: Any, server: tuple[str, Script]) -> None:
    _, script = server
    script.actions = [("ok", '{"correctness": 2, "completeness": 1, "faithfulness": 4}')]
    means = make_judge().score_many(["q1", "q2"], ["a1", "a2"], ["r1", None])
    assert means == {"judge_correctness": 3.0, "judge_completeness": 2.0, "judge_faithfulness": 4.5}
    for name in means:
        assert METRICS[name].inputs == "judge" and METRICS[name].higher_is_better
    with pytest.raises(ValueError, match="2 questions, 1 answers, 2 references"):
        make_judge().score_many(["q1", "q2"], ["a1"], ["r1", "r2"])


# --------------------------------------------------------------------------- the API key


def test_the_key_is_sent_but_never_stored_or_shown(
    make_judge: Any, server: tuple[str, Script], tmp_path: Path
) -> None:
    _, script = server
    judge = make_judge()
    judge.score("q", "a", "r")
    assert script.requests[0]["headers"]["Authorization"] == f"Bearer {SECRET}"
    for path in (tmp_path / "cache").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text()
    assert SECRET not in repr(judge.config) and SECRET not in repr(vars(judge))
    # a server that echoes the header back, as a rejection and as a reply, is redacted
    echo = f"bad key Bearer {SECRET}"
    for actions in ([("status", 401, echo)], [("ok", echo)] * 3, [("status", 500, echo)] * 3):
        script.actions = list(actions)
        with pytest.raises(JudgeError) as info:
            make_judge().score("q", f"fresh {actions[0][0]} {len(actions)}", "r")
        shown = "".join(traceback.format_exception(info.value)) + repr(info.value)
        assert SECRET not in shown
        assert "***" in str(info.value)


def test_an_unset_key_variable_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_MISSING_KEY", raising=False)
    config = JudgeConfig("http://127.0.0.1:9/v1", "m", api_key_env="JUDGE_MISSING_KEY")
    with pytest.raises(JudgeError, match="API key variable JUDGE_MISSING_KEY \\(api_key_env\\) is not set"):
        Judge(config)


# --------------------------------------------------------------------------- config and parsing


def test_config_from_mapping() -> None:
    config = JudgeConfig.from_mapping({"base_url": "https://api.example.com/v1/", "model": "gpt-x"})
    assert config == JudgeConfig("https://api.example.com/v1", "gpt-x", None, 60.0, 3)


@pytest.mark.parametrize(
    ("mapping", "error"),
    [
        (
            {"base_url": "http://h/v1", "model": "m", "api_key": "sk-x"},
            "key 'eval.judge.api_key': unknown key",
        ),
        ({"model": "m"}, "key 'eval.judge.base_url': required"),
        ({"base_url": "h/v1", "model": "m"}, "expected an http(s) URL"),
        ({"base_url": "http://h", "model": ""}, "key 'eval.judge.model': required"),
        ({"base_url": "http://h", "model": "m", "timeout_seconds": 0}, "expected a positive number"),
        ({"base_url": "http://h", "model": "m", "max_retries": -1}, "expected an integer >= 0"),
        ({"base_url": "http://h", "model": "m", "max_retries": True}, "expected an integer >= 0"),
    ],
)
def test_config_errors_name_the_key(mapping: dict[str, Any], error: str) -> None:
    with pytest.raises(SpecError, match=error.replace("(", "\\(").replace(")", "\\)")):
        JudgeConfig.from_mapping(mapping)


@pytest.mark.parametrize(
    "reply",
    [
        "",
        "[4, 3, 5]",
        '{"correctness": 4, "completeness": 3, "faithfulness": 5, "why": "ok"}',
        '{"correctness": 4.0, "completeness": 3, "faithfulness": 5}',
        '{"correctness": true, "completeness": 3, "faithfulness": 5}',
        '{"correctness": "4", "completeness": 3, "faithfulness": 5}',
        '{"correctness": 4, "completeness": 3, "faithfulness": 5} trailing',
    ],
)
def test_parse_verdict_is_strict(reply: str) -> None:
    with pytest.raises(ValueError):
        parse_verdict(reply)


def test_parse_verdict_accepts_surrounding_whitespace() -> None:
    assert parse_verdict(f"\n {GOOD} \n") == {"correctness": 4, "completeness": 3, "faithfulness": 5}


def test_the_rubric_is_versioned() -> None:
    # Changing the prompt without bumping RUBRIC_VERSION would reuse stale cached verdicts.
    digest = hashlib.sha256((RUBRIC_SYSTEM_PROMPT + RUBRIC_USER_TEMPLATE).encode()).hexdigest()
    assert (RUBRIC_VERSION, digest[:16]) == ("1", PINNED_RUBRIC_SHA256_PREFIX), (
        "the rubric prompt changed: bump RUBRIC_VERSION and update PINNED_RUBRIC_SHA256_PREFIX"
    )


PINNED_RUBRIC_SHA256_PREFIX = "1fd35ba9e48a50e3"


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path))
    assert judge_module.default_cache_dir() == tmp_path / "judge"
    monkeypatch.delenv("PEFTCORE_CACHE")
    assert judge_module.default_cache_dir() == Path.home() / ".cache" / "peftcore" / "judge"


def test_docstring_examples() -> None:
    import doctest

    from peftcore.spec import judge as judge_settings

    results = [doctest.testmod(module) for module in (judge_module, judge_settings)]
    assert sum(r.failed for r in results) == 0 and sum(r.attempted for r in results) >= 2


# --------------------------------------------------------------------------- wired into a case


def _judged_profile(tmp_path: Path, judge: dict[str, Any]) -> Path:
    import shutil

    import yaml

    specs = Path(
        shutil.copytree(Path(__file__).resolve().parents[1] / "benchmarks" / "specs", tmp_path / "specs")
    )
    (specs / "profiles" / "judged.yaml").write_text(
        yaml.safe_dump(
            {
                "description": "judged",
                "methods": ["base"],
                "models": ["smollm2-135m"],
                "tasks": ["nq_open"],
                "eval": {"judge": judge},
            }
        )
    )
    return specs


def test_a_case_with_a_judge_records_its_mean_scores_per_split(
    server: tuple[str, Script], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from peftcore.data.example import Example, TaskData
    from peftcore.pipeline.scoring import judge_scores
    from peftcore.spec import SpecStore
    from peftcore.spec.cases import expand

    base_url, script = server
    monkeypatch.setenv("PEFTCORE_CACHE", str(tmp_path / "cache"))
    script.actions = [
        ("ok", '{"correctness": 5, "completeness": 4, "faithfulness": 5}'),
        ("ok", '{"correctness": 1, "completeness": 2, "faithfulness": 3}'),
        ("ok", '{"correctness": 2, "completeness": 2, "faithfulness": 2}'),
    ]
    specs = _judged_profile(tmp_path, {"base_url": base_url, "model": "judge-model"})
    (case,) = expand(SpecStore(specs), "judged")
    one = Example(uid="a", prompt="Q: capital of France?", target="Paris", answers=("Paris",))
    two = Example(uid="b", prompt="Q: 2+2?", target="4", answers=("4", "four"))
    data = TaskData(
        "nq_open",
        train=(one,),
        held_out=(one, two),
        seen=(one,),
        data_sha256="x",
        split_sha256="y",
        source_size=2,
    )
    results = {
        "held_out": SimpleNamespace(predictions=[{"generated": "Paris"}, {"generated": "five"}]),
        "seen": SimpleNamespace(predictions=[{"generated": "Lyon"}]),
    }
    record: dict[str, Any] = {"metrics": {"held_out": {"f1": 0.5}, "seen": {"f1": 0.0}}}
    for split, judged in judge_scores(case, data, results):
        record["metrics"][split].update(judged)
    assert record["metrics"]["held_out"] == {
        "f1": 0.5,
        "judge_correctness": 3.0,
        "judge_completeness": 3.0,
        "judge_faithfulness": 4.0,
    }
    assert record["metrics"]["seen"]["judge_correctness"] == 2.0
    asked = [r["body"]["messages"][-1]["content"] for r in script.requests]
    assert "Q: 2+2?" in asked[1] and "five" in asked[1] and "four" in asked[1]


def test_a_malformed_judge_block_fails_at_collection_naming_the_profile(tmp_path: Path) -> None:
    from peftcore.spec import SpecStore
    from peftcore.spec.cases import expand

    specs = _judged_profile(tmp_path, {"base_url": "ftp://judge", "model": "m"})
    with pytest.raises(SpecError) as caught:
        expand(SpecStore(specs), "judged")
    assert caught.value.file == str(specs / "profiles" / "judged.yaml")
    assert caught.value.key == "eval.judge.base_url"
