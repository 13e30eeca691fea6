"""`evaluate` metric: membership-inference AUC and TPR at low FPR.

import evaluate
metric = evaluate.load("path/to/hf_carto/measure/metrics/membership_auc")
metric.compute(predictions=scores, references=is_member)   # higher score = more likely a member
"""

import evaluate
import numpy as np

from hf_carto.measure.membership import roc_auc, tpr_at_fpr
from hf_carto.measure.metrics.metric_info import binary_metric_info

_DESCRIPTION = """ROC AUC of a membership-inference score (ties count one half), and the true-positive
rate at 1% and 0.1% false-positive rate of the best threshold rule `score >= c`."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `float`): membership scores, higher meaning more likely a member.
    references (`list` of `int`): 1 for training members, 0 for held-out non-members.
Returns:
    auc (`float`), tpr@1%fpr (`float`), tpr@0.1%fpr (`float`).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MembershipAuc(evaluate.Metric):
    def _info(self):
        return binary_metric_info(_DESCRIPTION, _KWARGS_DESCRIPTION, "float64", "int32")

    def _compute(self, predictions, references):
        scores = np.asarray(predictions, dtype=np.float64)
        labels = np.asarray(references)
        members, non_members = scores[labels == 1], scores[labels == 0]
        return {
            "auc": roc_auc(members, non_members),
            "tpr@1%fpr": tpr_at_fpr(members, non_members, 0.01),
            "tpr@0.1%fpr": tpr_at_fpr(members, non_members, 0.001),
        }
