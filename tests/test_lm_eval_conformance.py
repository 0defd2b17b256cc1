"""Choice scoring agrees with lm-evaluation-harness itself, example by example.

lm-evaluation-harness (a test dependency, run offline on a local YAML task) and peftcore score
the same held-out examples of ARC-Easy (multiple choice) and SST-2 (classification) with the
default model: the same converted checkpoint in fp32, the plain prompt (no chat template),
each example's rendered prompt as the harness's ``doc_to_text`` and its choices, without the
separating space, as ``doc_to_choice`` (the harness adds its ``target_delimiter`` " ").

Each choice's summed log-likelihood must agree within ``LL_TOLERANCE`` (nats; the two batch
and pad differently, which moves fp32 sums in the last digits); the chosen answer must agree
wherever the top two choices are further apart than that; so must ``acc`` and ``acc_norm``
(characters) and ``acc_bytes``, and the standard errors of ``acc`` and ``acc_norm``
(``acc_stderr``, ``acc_norm_stderr``). The full-split comparison and its figures are in the README
(``PEFTCORE_LM_EVAL_FULL=1`` runs every example).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import pytest

from peftcore.spec import BaseOptions, DataSizes, EvalSettings, SpecStore

SPECS = Path(__file__).resolve().parents[1] / "benchmarks" / "specs"
LL_TOLERANCE = 2e-3
FULL = os.environ.get("PEFTCORE_LM_EVAL_FULL") == "1"
EXAMPLES = {"arc_easy": 570 if FULL else 40, "sst2": 872 if FULL else 40}

TASK_YAML = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {data}
validation_split: validation
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
"""


pytestmark = pytest.mark.slow  # the real model, training or pytest sessions of it: not in the quick tier


@pytest.fixture(scope="module")
def model():
    from peftcore.models.load import load_base

    store = SpecStore(SPECS)
    spec = store.get("models", "smollm2-135m")
    return store, load_base(spec, BaseOptions(), "cpu")


def _peftcore(store: SpecStore, loaded: Any, task_name: str) -> tuple[Any, Any]:
    from peftcore import score as scoring
    from peftcore.data.tasks import load_task
    from peftcore.train.prompting import PromptFormat

    # the three accuracies lm-eval reports
    metrics = ("accuracy", "accuracy_norm", "accuracy_bytes")
    task = dataclasses.replace(store.get("tasks", task_name), metrics=metrics)
    held_out = load_task(task, DataSizes(train=0, held_out=EXAMPLES[task_name], seen=0)).held_out
    fmt = PromptFormat(loaded.tokenizer, chat=False)
    settings = EvalSettings(batch_size=8, precision="fp32")
    result = scoring.score(loaded.model, fmt, held_out, task, settings, device="cpu", precision="fp32")
    return held_out, result


def _lm_eval(tmp_path: Path, task_name: str, examples: Any, checkpoint: str) -> dict[str, Any]:
    import lm_eval
    from lm_eval.tasks import TaskManager

    data = tmp_path / f"{task_name}.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for e in examples:
            choices = [c[1:] if c.startswith(" ") else c for c in e.choices]
            out.write(json.dumps({"prompt": e.prompt, "choices": choices, "label": e.label}) + "\n")
    name = f"peftcore_{task_name}"
    (tmp_path / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=data))
    results = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={checkpoint},dtype=float32",
        tasks=[name],
        task_manager=TaskManager(include_path=str(tmp_path)),
        device="cpu",
        batch_size=8,
        log_samples=True,
    )
    return {"metrics": results["results"][name], "samples": results["samples"][name]}


@pytest.mark.parametrize("task_name", sorted(EXAMPLES))
def test_choice_scores_agree_with_lm_evaluation_harness(
    model: Any, tmp_path: Path, task_name: str, record_property: Any
) -> None:
    from peftcore.models.checkpoints import checkpoint_dir

    store, loaded = model
    examples, ours = _peftcore(store, loaded, task_name)
    harness = _lm_eval(tmp_path, task_name, examples, checkpoint_dir(loaded.spec))
    samples = sorted(harness["samples"], key=lambda s: s["doc_id"])
    assert len(samples) == len(examples)
    worst, near_ties = 0.0, 0
    for example, prediction, sample in zip(examples, ours.predictions, samples, strict=True):
        theirs = [float(resp[0]) for resp in sample["filtered_resps"]]
        mine = prediction["loglikelihoods"]
        worst = max(worst, *(abs(a - b) for a, b in zip(mine, theirs, strict=True)))
        assert mine == pytest.approx(theirs, abs=LL_TOLERANCE), example.uid
        top = sorted(theirs, reverse=True)
        if top[0] - top[1] > LL_TOLERANCE:  # not a near tie: the same answer
            assert bool(sample["acc"]) == (prediction["choice"] == example.label), example.uid
        else:
            near_ties += 1
    got = harness["metrics"]
    record_property("max_loglikelihood_difference", worst)
    # Accuracies agree but for examples whose top choices are within the tolerance (none, so far).
    allowed = near_ties / len(examples) + 1e-9
    for ours_name, theirs_name in (
        ("accuracy", "acc,none"),
        ("accuracy_norm", "acc_norm,none"),
        ("accuracy_bytes", "acc_bytes,none"),
    ):
        assert ours.metrics[ours_name] == pytest.approx(got[theirs_name], abs=allowed), ours_name
    # Standard errors: the harness's acc_stderr / acc_norm_stderr (sample sd over sqrt(n)) of the
    # same examples. With no near ties the accuracies, and so their standard errors, are equal.
    if near_ties == 0:
        for ours_name, theirs_name in (
            ("accuracy", "acc_stderr,none"),
            ("accuracy_norm", "acc_norm_stderr,none"),
        ):
            assert ours.uncertainty[ours_name]["stderr"] == pytest.approx(got[theirs_name], rel=1e-9), (
                ours_name
            )
    print(
        f"\n[{task_name}] {len(examples)} examples: peftcore acc {ours.metrics['accuracy']:.4f} "
        f"acc_norm {ours.metrics['accuracy_norm']:.4f} acc_bytes {ours.metrics['accuracy_bytes']:.4f}; "
        f"lm-eval acc {got['acc,none']:.4f} acc_norm {got['acc_norm,none']:.4f} "
        f"acc_bytes {got['acc_bytes,none']:.4f}; largest log-likelihood difference {worst:.2e}, "
        f"near ties {near_ties}"
    )
