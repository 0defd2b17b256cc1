"""The local `evaluate` modules load offline and give exactly the pure functions' values, and
resolve_metric fails at load time, in one line, for a metric that is neither built in nor
loadable."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from peftcore.score import metrics
from peftcore.score.metrics import MetricError, evaluate_module_path

# Nothing here may reach a model hub; huggingface_hub and evaluate read this when first imported.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection beyond the loopback fails, as it does on a machine without a hub."""
    real_connect = socket.socket.connect

    def connect(self: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost") and self.family != socket.AF_UNIX:
            raise ConnectionRefusedError(f"test blocked a network connection to {address!r}")
        real_connect(self, address)  # type: ignore[arg-type]

    monkeypatch.setattr(socket.socket, "connect", connect)


@pytest.fixture(scope="module")
def load() -> Iterator[Any]:
    import evaluate

    # keep_in_memory: no arrow cache files for these small inputs
    yield lambda name: evaluate.load(str(evaluate_module_path(name)), keep_in_memory=True)


TEXT_CASES = [
    (
        "squad_f1",
        ["Denver Broncos", "blue whale", "nothing", ""],
        [["Broncos", "the Denver Broncos"], ["whale"], ["something", "else"], [""]],
    ),
    ("squad_f1", ["Denver Broncos", "blue"], ["Broncos", "red"]),  # one gold string each
    (
        "gsm8k_number",
        ["so she has 72 clips.", "#### 5", "I do not know", "10.0"],
        ["#### 72", "6", "3", "10"],
    ),
    ("gsm8k_number", ["#### 5", "7"], [["6", "4"], ["7"]]),
    ("rouge_l", ["the cat sat", "x y"], [["dogs", "the cat sat"], ["z"]]),
]


@pytest.mark.parametrize(("module", "predictions", "references"), TEXT_CASES)
def test_module_equals_the_pure_functions(
    load: Any, module: str, predictions: list[str], references: list[Any]
) -> None:
    result = load(module).compute(predictions=predictions, references=references)
    expected = {
        name: metrics.METRICS[name](predictions, references) for name in metrics._EVALUATE_MODULES[module]
    }
    assert result == expected


def test_classification_module_equals_the_pure_functions(load: Any) -> None:
    predicted, gold = [0, 2, 1, 1, 3], [0, 1, 1, 3, 3]
    result = load("macro_f1").compute(predictions=predicted, references=gold)
    assert result == {
        "accuracy": metrics.accuracy(predicted, gold),
        "macro_f1": metrics.macro_f1(predicted, gold),
    }


def test_semantic_module_equals_the_pure_functions(load: Any) -> None:
    predictions = ["Paris is France's capital city.", "quarterly revenue grew"]
    references = [["The capital of France is Paris."], ["the cat sat on the mat", "revenue went up"]]
    result = load("bertscore_f1").compute(predictions=predictions, references=references)
    assert result["cosine_similarity"] == pytest.approx(metrics.cosine_similarity(predictions, references))
    assert result["bertscore_f1"] == pytest.approx(metrics.bertscore_f1(predictions, references))


def test_nan_survives_the_module(load: Any) -> None:
    result = load("abs_diff").compute(predictions=["none"], references=["3"])
    assert math.isnan(result["abs_diff"])
    assert result["number_unparseable_rate"] == 1.0


def test_module_paths() -> None:
    assert (
        evaluate_module_path("f1") == evaluate_module_path("exact_match") == evaluate_module_path("squad_f1")
    )
    for name in ("f1", "abs_diff", "macro_f1", "rouge_l", "cosine_similarity"):
        assert evaluate_module_path(name).is_file()
    with pytest.raises(
        MetricError, match="no evaluate module for metric 'perplexity'; there are modules for: "
    ):
        evaluate_module_path("perplexity")


def test_modules_import_one_name_per_line() -> None:
    # evaluate reads `import a, b` as a requirement named "a," (assets.md)
    for path in sorted(Path(metrics.__file__).parent.joinpath("metric_modules").glob("*.py")):
        for line in path.read_text().splitlines():
            if re.match(r"^(import|from)\s", line):
                assert "," not in line and ";" not in line, f"{path.name}: {line}"


def test_unknown_metric_fails_at_load_in_one_line() -> None:
    with pytest.raises(MetricError) as info:
        metrics.resolve_metric("no_such_metric_xyz")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("metric 'no_such_metric_xyz' is not a built-in metric and could not be loaded")
    assert "built-in metrics: abs_diff, accuracy, accuracy_bytes, accuracy_norm, bertscore_f1," in message


def test_hub_metric_fails_at_load_when_offline() -> None:
    # "squad" exists on the hub, but its script cannot be fetched here
    with pytest.raises(
        MetricError, match=r"^metric 'squad' is not a built-in metric .*evaluate\.load\('squad'\)"
    ):
        metrics.resolve_metric("squad")


def test_resolve_metric_wraps_a_loadable_evaluate_module() -> None:
    predictions, references = ["The Broncos", "blue"], [["Broncos"], ["red"]]
    path = str(evaluate_module_path("squad_f1"))
    metric = metrics.resolve_metric(f"{path}:exact_match")
    assert metric(predictions, references) == metrics.exact_match(predictions, references) == 0.5
    assert metric.higher_is_better and metric.inputs == "texts"
    assert metrics.resolve_metric(f"{path}:exact_match") is metric  # loaded once
    # a module with several values needs one named
    several = metrics.resolve_metric(path)
    with pytest.raises(MetricError, match="returns several values \\(exact_match, f1\\); name one as"):
        several(predictions, references)
    missing = metrics.resolve_metric(f"{path}:recall")
    with pytest.raises(MetricError, match="returned no 'recall' \\(it has exact_match, f1\\)"):
        missing(predictions, references)
