"""ROUGE-L F-measure from ``peftcore.score.metrics`` (rouge_score, no stemmer), as a local `evaluate` module.

Load it offline with ``evaluate.load(str(peftcore.score.metrics.evaluate_module_path("rouge_l")))``.
One import per line: evaluate reads this file's import lines as its requirements.
"""

import datasets
import evaluate

from peftcore.score import metrics

_DESCRIPTION = "ROUGE-L F-measure (rouge_score, no stemmer), best over the references, mean over examples."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated texts (str).
    references: list of references, each a str or a list of str.
Returns:
    rouge_l (0-1).
Example:
    >>> module.compute(predictions=["the cat sat"], references=[["a cat sat down"]])
    {'rouge_l': 0.5714285714285715}
"""


class RougeL(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004",
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
        return {"rouge_l": metrics.rouge_l(predictions, references)}
