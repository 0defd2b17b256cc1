"""SQuAD v1.1 token F1 and exact match from ``peftcore.score.metrics``, as a local `evaluate` module.

Load it offline with ``evaluate.load(str(peftcore.score.metrics.evaluate_module_path("f1")))``.
One import per line: evaluate reads this file's import lines as its requirements.
"""

import datasets
import evaluate

from peftcore.score import metrics

_DESCRIPTION = "SQuAD v1.1 token F1 and exact match (0-1), best over the gold answers, mean over examples."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted answers (str).
    references: list of gold answers, each a str or a list of str.
Returns:
    f1: mean best token F1 (0-1); exact_match: fraction matching a gold answer (0-1).
Example:
    >>> module.compute(predictions=["Denver Broncos"], references=[["Broncos", "Denver Broncos"]])
    {'f1': 1.0, 'exact_match': 1.0}
"""


class SquadF1(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., SQuAD: 100,000+ Questions for Machine Comprehension of Text, 2016",
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
            "f1": metrics.f1(predictions, references),
            "exact_match": metrics.exact_match(predictions, references),
        }
