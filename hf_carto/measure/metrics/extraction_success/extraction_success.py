"""`evaluate` metric: exact-match extraction rate of secrets from greedy continuations.

metric = evaluate.load("path/to/hf_carto/measure/metrics/extraction_success")
metric.compute(predictions=generated_secrets, references=true_secrets)
"""

import evaluate

from hf_carto.measure.metrics.metric_info import binary_metric_info

_DESCRIPTION = """Fraction of canaries whose greedy continuation reproduces the secret exactly
(surrounding whitespace ignored)."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): decoded greedy continuations of the canary prefixes.
    references (`list` of `str`): the secrets.
Returns:
    extraction_success (`float`), num_extracted (`int`).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExtractionSuccess(evaluate.Metric):
    def _info(self):
        return binary_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "string", "string")

    def _compute(self, predictions, references):
        hits = [p.strip() == r.strip() for p, r in zip(predictions, references, strict=True)]
        return {"extraction_success": sum(hits) / len(hits) if hits else 0.0, "num_extracted": int(sum(hits))}
