"""Curation policies: the recommended default and the paper's rules, against selections made by hand."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_carto import (
    PAPER,
    RECOMMENDED,
    CurationPolicy,
    add_cartography,
    apply_interventions,
    curate,
    detector_scores,
    fit_cartography,
)
from hf_carto.core.columns import KEEP, LOSS_WEIGHT, SAMPLING_WEIGHT, loss_column


@pytest.fixture(scope="module")
def scored():
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 1.0, size=(200, 6)).astype(np.float32)
    columns = {loss_column(t + 1): losses[:, t] for t in range(6)}
    data = Dataset.from_dict({"sample_id": np.arange(1000, 1200), **columns})
    fit = fit_cartography(data, burn_in=2, eps="quantile:0.2")
    return add_cartography(data, fit), fit, losses


def test_the_recommended_policy_treats_the_top_of_its_detector(scored):
    data, fit, losses = scored
    curated = curate(data, fit=fit)  # the default is the recommended policy
    scores = detector_scores(RECOMMENDED.detector, losses.astype(np.float64), eps=fit.eps, burn_in=fit.burn_in)
    k = int(np.floor(RECOMMENDED.budget * 200 + 0.5))
    # by hand: the k highest scores, ties by ascending sample_id
    order = sorted(range(200), key=lambda i: (-scores[i], 1000 + i))
    chosen = np.zeros(200, dtype=bool)
    chosen[order[:k]] = True
    keep = np.asarray(curated[KEEP])
    removes = RECOMMENDED.weight == 0
    assert (keep == ~chosen).all() if removes else keep.all()
    np.testing.assert_allclose(np.asarray(curated[LOSS_WEIGHT]), np.where(chosen, RECOMMENDED.weight, 1.0))
    # a removed block is never drawn; a down-weighted one is drawn as often as any other
    np.testing.assert_array_equal(np.asarray(curated[SAMPLING_WEIGHT]), np.where(chosen & removes, 0.0, 1.0))


def test_a_downweighting_policy_keeps_every_block_at_its_weight(scored):
    data, fit, losses = scored
    policy = CurationPolicy("loss_std", 0.1, 0.1)
    assert policy.kind == "downweight" and policy.arm_name == "loss_std_downweight0.1"
    curated = curate(data, policy, fit=fit)
    top = np.argsort(-losses.astype(np.float64).std(axis=1), kind="stable")[:20]
    weights = np.asarray(curated[LOSS_WEIGHT])
    assert np.asarray(curated[KEEP]).all()
    assert set(np.flatnonzero(weights < 1)) == set(top.tolist())
    assert np.allclose(weights[top], 0.1)


def test_the_paper_policy_is_the_per_quadrant_rules(scored):
    data, fit, _ = scored
    got = curate(data, "paper", fit=fit)
    expected = apply_interventions(data, gamma=1.0, alpha=PAPER.weight, remove_noisy=False)
    for column in (LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP):
        assert got[column] == expected[column]


def test_bad_policies_are_refused_with_the_reason(scored):
    data, _, _ = scored
    with pytest.raises(ValueError, match="unknown policy"):
        curate(data, "best")
    with pytest.raises(ValueError, match="needs the CartographyFit"):
        curate(data, "recommended")
    with pytest.raises(ValueError, match="budget in"):
        CurationPolicy("combined", 1.5)
    with pytest.raises(ValueError, match="unknown detector"):
        CurationPolicy("loss", 0.1)
    with pytest.raises(ValueError, match="control"):
        CurationPolicy("random", 0.1)
    with pytest.raises(ValueError, match="weight"):
        CurationPolicy("combined", 0.1, 1.0)
