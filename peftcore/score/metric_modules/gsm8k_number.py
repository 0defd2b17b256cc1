"""GSM8K-style numeric answer metrics from ``peftcore.score.metrics``, as a local `evaluate` module.

Load it offline with ``evaluate.load(str(peftcore.score.metrics.evaluate_module_path("abs_diff")))``.
One import per line: evaluate reads this file's import lines as its requirements.
"""

import datasets
import evaluate

from peftcore.score import metrics

_DESCRIPTION = (
    "Numbers extracted GSM8K-style (after '####', else the last number): exact match, mean absolute "
    "difference over answers holding a number, and the fraction of answers holding none."
)

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (str).
    references: list of gold answers, each a str or a list of str (a number, or a text ending in '#### N').
Returns:
    number_exact_match (0-1), abs_diff (lower is better; nan when no answer holds a number),
    number_unparseable_rate (0-1, lower is better).
Example:
    >>> module.compute(predictions=["so 72.", "none"], references=["#### 72", "5"])
    {'number_exact_match': 0.5, 'abs_diff': 0.0, 'number_unparseable_rate': 0.5}
"""


class Gsm8kNumber(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Cobbe et al., Training Verifiers to Solve Math Word Problems, 2021",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
                ),
                datasets.Features(
                    {
                        "predictions": datasets.Value("string"),
                        "references": datasets.List(datasets.Value("string")),
                    }
                ),
            ],
        )

    def _compute(self, predictions: list[str], references: list[str | list[str]]) -> dict[str, float]:
        return {
            "number_exact_match": metrics.number_exact_match(predictions, references),
            "abs_diff": metrics.abs_diff(predictions, references),
            "number_unparseable_rate": metrics.number_unparseable_rate(predictions, references),
        }
