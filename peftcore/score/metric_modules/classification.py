"""Accuracy and macro F1 over labels from ``peftcore.score.metrics``, as a local `evaluate` module.

Load it offline with ``evaluate.load(str(peftcore.score.metrics.evaluate_module_path("macro_f1")))``.
One import per line: evaluate reads this file's import lines as its requirements.
"""

import datasets
import evaluate

from peftcore.score import metrics

_DESCRIPTION = "Accuracy and macro F1 (over the classes in gold or predicted) of integer labels."

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of predicted labels (int, e.g. choice indices).
    references: list of gold labels (int).
Returns:
    accuracy (0-1), macro_f1 (0-1).
Example:
    >>> module.compute(predictions=[0, 2, 1, 1], references=[0, 1, 1, 3])
    {'accuracy': 0.5, 'macro_f1': 0.375}
"""


class Classification(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
            ),
        )

    def _compute(self, predictions: list[int], references: list[int]) -> dict[str, float]:
        return {
            "accuracy": metrics.accuracy(predictions, references),
            "macro_f1": metrics.macro_f1(predictions, references),
        }
