"""Membership metrics against brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hf_carto.measure.membership import (
    bootstrap_interval,
    membership_metrics,
    plot_roc,
    roc_auc,
    roc_curve,
    tpr_at_fpr,
)


def pairwise_auc(members, non_members):
    wins = 0.0
    for a in members:
        for b in non_members:
            wins += 1.0 if a > b else 0.5 if a == b else 0.0
    return wins / (len(members) * len(non_members))


def brute_tpr(members, non_members, fpr):
    """Best TPR over every rule `score >= c` (c over all observed values and +inf) with FPR <= fpr."""
    best = 0.0
    for c in sorted(set(members) | set(non_members)) + [np.inf]:
        fp = np.mean([b >= c for b in non_members])
        if fp <= fpr + 1e-12:
            best = max(best, np.mean([a >= c for a in members]))
    return best


scores = arrays(np.float64, st.integers(1, 30), elements=st.sampled_from([0.0, 0.5, 1.0, 1.5, 2.0, 3.0]))


@settings(max_examples=200, deadline=None)
@given(members=scores, non_members=scores, fpr=st.sampled_from([0.0, 0.01, 0.1, 0.25, 0.5, 1.0]))
def test_metrics_match_brute_force(members, non_members, fpr):
    assert roc_auc(members, non_members) == pytest.approx(pairwise_auc(members, non_members), abs=1e-12)
    assert tpr_at_fpr(members, non_members, fpr) == pytest.approx(brute_tpr(members, non_members, fpr), abs=1e-12)
    fprs, tprs = roc_curve(members, non_members)
    assert fprs[0] == 0 and tprs[0] == 0 and fprs[-1] == 1 and tprs[-1] == 1
    assert (np.diff(fprs) >= 0).all() and (np.diff(tprs) >= 0).all()
    # The trapezoid area under the ROC curve is the AUC (ties give diagonal segments).
    assert np.trapezoid(tprs, fprs) == pytest.approx(pairwise_auc(members, non_members), abs=1e-12)


def test_separable_and_identical_distributions():
    rng = np.random.default_rng(0)
    a, b = rng.normal(3, 1, 2000), rng.normal(0, 1, 2000)
    assert roc_auc(a, b) > 0.98
    same = rng.normal(0, 1, 2000)
    assert abs(roc_auc(same, b) - 0.5) < 0.04
    low, high = bootstrap_interval(same, b, roc_auc, num_resamples=200)
    assert low < roc_auc(same, b) < high and low < 0.5 < high


def test_membership_metrics_report_and_plot(tmp_path):
    rng = np.random.default_rng(1)
    result = membership_metrics("loss", rng.normal(1, 1, 500), rng.normal(0, 1, 500), num_resamples=100)
    report = result.to_dict()
    assert report["auc_95ci"][0] <= report["auc"] <= report["auc_95ci"][1]
    assert 0 <= report["tpr@0.1%fpr"] <= report["tpr@1%fpr"] <= 1
    path = plot_roc([result], tmp_path / "roc.png")
    assert path.stat().st_size > 5000


@pytest.mark.parametrize(
    ("members", "non_members", "match"),
    [([], [1.0], "got 0 and 1"), ([1.0], [], "got 1 and 0"), ([np.nan, 1.0], [1.0], "1 member scores are not finite")],
)
def test_bad_score_sets(members, non_members, match):
    with pytest.raises(ValueError, match=match):
        roc_auc(np.array(members), np.array(non_members))
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr(np.ones(2), np.ones(2), 1.5)


def test_evaluate_metric_modules_load_from_the_package():
    import evaluate

    from hf_carto.measure.metrics import metric_path

    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.55])
    labels = np.array([1, 1, 0, 0, 1, 0])
    auc = evaluate.load(metric_path("membership_auc")).compute(predictions=scores, references=labels)
    assert auc["auc"] == pytest.approx(roc_auc(scores[labels == 1], scores[labels == 0]))
    assert auc["tpr@1%fpr"] == tpr_at_fpr(scores[labels == 1], scores[labels == 0], 0.01)
    success = evaluate.load(metric_path("extraction_success")).compute(
        predictions=[" 1234", "99"], references=["1234", "12"]
    )
    assert success == {"extraction_success": 0.5, "num_extracted": 1}
    with pytest.raises(ValueError, match="unknown metric"):
        metric_path("bleu")
