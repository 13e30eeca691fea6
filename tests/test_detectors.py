"""Detectors and detection quality against naive per-sample references written from their definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_carto import (
    DETECTORS,
    add_detector_scores,
    average_precision,
    dataset_detection_quality,
    decided_by_tie_break,
    detection_quality,
    detector_scores,
    memorization_sensitivity,
    memorization_tie_breaks,
    planted_targets,
    precision_recall_at,
    precision_recall_curve,
    select_top_memorized,
    top_budget,
)
from hf_carto.core.columns import PLANTED_NAMES, loss_column, score_column, score_columns

EPS, BURN_IN = 1.5, 2


def random_matrix(seed=0, n=40, t=6):
    return np.random.default_rng(seed).gamma(2.0, 1.0, size=(n, t))


def tie_heavy_matrix(seed=0, n=60, t=6):
    # Integer losses: many rows share values, and many samples share every score that counts.
    return np.random.default_rng(seed).integers(1, 4, size=(n, t)).astype(np.float64)


MATRICES = [random_matrix(0), random_matrix(1, n=7, t=3), tie_heavy_matrix(0), tie_heavy_matrix(1, n=25, t=4)]

# --- naive references: one sample at a time, from each detector's definition ---------------------


def naive_events(row, eps):
    """Moves from fitted (below eps) to unfitted (above eps); a loss exactly at eps keeps the state."""
    state, events = None, 0
    for value in row:
        now = "fitted" if value < eps else "unfitted" if value > eps else state
        events += state == "fitted" and now == "unfitted"
        state = now
    return events


def naive_mean(values):
    return sum(float(v) for v in values) / len(values)


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


NAIVE = {
    "memorization": lambda row, ref: naive_events(row, EPS) + 0.5 - math.atan(naive_mean(row[:BURN_IN])) / math.pi,
    "soft_forgetting": lambda row, ref: math.log(
        sum(sigmoid((EPS - row[t]) / 0.1) * sigmoid((row[t + 1] - EPS) / 0.1) for t in range(len(row) - 1))
    ),
    "final_loss": lambda row, ref: -float(row[-1]),
    "min_loss": lambda row, ref: -min(float(x) for x in row),
    "loss_drop": lambda row, ref: float(row[0]) - float(row[-1]),
    "mean_loss": lambda row, ref: -naive_mean(row),
    "loss_std": lambda row, ref: math.sqrt(naive_mean([(float(x) - naive_mean(row)) ** 2 for x in row])),
    # dataset cartography: mean and population std over epochs of the gold-label probability exp(-loss)
    "confidence": lambda row, ref: naive_mean([math.exp(-float(x)) for x in row]),
    "variability": lambda row, ref: math.sqrt(
        naive_mean([(math.exp(-float(x)) - naive_mean([math.exp(-float(y)) for y in row])) ** 2 for x in row])
    ),
    "reference_ratio": lambda row, ref: -float(row[-1]) / ref,
}


@pytest.mark.parametrize("losses", MATRICES, ids=["random", "random-small", "ties", "ties-small"])
@pytest.mark.parametrize("name", list(NAIVE))
def test_every_detector_matches_its_naive_per_sample_loop(name, losses):
    got = detector_scores(name, losses, eps=EPS, burn_in=BURN_IN)
    expected = [NAIVE[name](list(row), row[BURN_IN - 1]) for row in losses]
    assert got.shape == (len(losses),) and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


def naive_average_rank(values, i):
    """Rank of ``values[i]`` among all (1 = lowest), ties sharing the mean of their ranks."""
    below = sum(1 for v in values if v < values[i])
    tied = sum(1 for v in values if v == values[i])  # itself included
    return below + (tied + 1) / 2


@pytest.mark.parametrize("losses", MATRICES, ids=["random", "random-small", "ties", "ties-small"])
def test_combined_detector_is_the_mean_rank_of_its_components_by_a_naive_loop(losses):
    rows = [list(row) for row in losses]
    components = {
        "loss_drop": [NAIVE["loss_drop"](row, None) for row in rows],
        "reference_ratio": [NAIVE["reference_ratio"](row, row[BURN_IN - 1]) for row in rows],
        "loss_std": [NAIVE["loss_std"](row, None) for row in rows],
    }
    n = len(rows)
    expected = [sum(naive_average_rank(v, i) for v in components.values()) / (3 * n) for i in range(n)]
    got = detector_scores("combined", losses, burn_in=BURN_IN)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert 0 < got.min() and got.max() <= 1


def test_combined_detector_puts_first_what_every_component_puts_first():
    losses = random_matrix(3, n=30)
    losses[7] = [9.0, 8.0, 6.0, 3.0, 0.5, 0.01]  # largest drop, largest spread, far below its burn-in loss
    got = detector_scores("combined", losses, burn_in=BURN_IN)
    assert got.argmax() == 7 and got[7] == pytest.approx(1.0)
    from hf_carto.score.detectors import average_ranks, combined_rank

    one = combined_rank(losses, burn_in=BURN_IN, components=["loss_std"])
    np.testing.assert_array_equal(one, average_ranks(detector_scores("loss_std", losses)) / 30)


def test_average_ranks_match_scipy_convention_on_ties():
    from hf_carto.score.detectors import average_ranks

    np.testing.assert_array_equal(average_ranks(np.array([3.0, 1.0, 3.0, 2.0, 3.0])), [4.0, 1.0, 4.0, 2.0, 4.0])
    values = np.random.default_rng(0).integers(0, 5, size=40).astype(float)
    np.testing.assert_array_equal(average_ranks(values), [naive_average_rank(list(values), i) for i in range(40)])


def test_combined_detector_refuses_itself_or_random_as_a_component():
    from hf_carto.score.detectors import combined_rank

    for bad in (["combined"], ["random", "loss_std"], []):
        with pytest.raises(ValueError, match="components"):
            combined_rank(random_matrix(0), burn_in=BURN_IN, components=bad)


def test_reference_ratio_takes_a_given_reference_model():
    losses = random_matrix(2)
    reference = np.random.default_rng(3).uniform(1.0, 5.0, size=len(losses))
    got = detector_scores("reference_ratio", losses, reference=reference)
    np.testing.assert_allclose(got, [-row[-1] / r for row, r in zip(losses, reference, strict=True)], rtol=1e-12)
    assert not np.allclose(got, detector_scores("reference_ratio", losses, burn_in=BURN_IN))


def test_random_detector_is_seeded_per_row():
    losses = tie_heavy_matrix()
    first = detector_scores("random", losses, seed=4)
    np.testing.assert_array_equal(first, np.random.default_rng(4).random(len(losses)))
    np.testing.assert_array_equal(first, detector_scores("random", losses, seed=4))
    assert not np.array_equal(first, detector_scores("random", losses, seed=5))


@pytest.mark.parametrize("losses", MATRICES, ids=["random", "random-small", "ties", "ties-small"])
def test_memorization_ranks_by_m_then_difficulty_as_the_paper_cut(losses):
    scores = detector_scores("memorization", losses, eps=EPS, burn_in=BURN_IN)
    m = [naive_events(row, EPS) / (losses.shape[1] - 1) for row in losses]
    d = [naive_mean(row[:BURN_IN]) for row in losses]
    ids = np.arange(len(losses))[::-1].copy()  # ids against row order, so the last key matters
    naive_order = sorted(range(len(losses)), key=lambda i: (-m[i], d[i], ids[i]))
    for fraction in (0.1, 0.3, 0.5, 1.0):
        k = math.floor(fraction * len(losses) + 0.5)
        cut = top_budget(scores, fraction, sample_ids=ids)
        assert cut.indices.tolist() == naive_order[:k]
        paper = select_top_memorized(np.asarray(m), fraction, difficulty=np.asarray(d), sample_ids=ids)
        assert cut.indices.tolist() == paper.indices.tolist()


def test_soft_forgetting_separates_what_the_event_count_ties_and_tends_to_it():
    real = random_matrix(5, n=300)
    assert len(np.unique(detector_scores("soft_forgetting", real, eps=EPS))) == 300  # no tie on real losses
    losses = tie_heavy_matrix(5, n=200)
    events = np.array([naive_events(row, EPS) for row in losses])
    scores = detector_scores("soft_forgetting", losses, eps=EPS)
    # Samples without any forget event all tie for m; soft forgetting separates most distinct
    # transition multisets among them (terms far below float64 resolution merge a few).
    never = {
        tuple(sorted(zip(row[:-1], row[1:], strict=True))) for row, e in zip(losses, events, strict=True) if e == 0
    }
    assert len(never) > 10 and len(np.unique(scores[events == 0])) >= 0.8 * len(never)
    sharp = np.exp(detector_scores("soft_forgetting", losses, eps=EPS, temperature=0.01))
    np.testing.assert_allclose(sharp[events > 0], events[events > 0], rtol=1e-6)
    assert (sharp[events == 0] < 1e-6).all()


# --- the cut and its tie-break -------------------------------------------------------------------


def test_top_budget_counts_the_samples_its_tie_break_decided():
    scores = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    cut = top_budget(scores, 0.6)  # k = 3: row 0 outright, two of the three tied rows by id
    assert cut.indices.tolist() == [0, 1, 2]
    assert (cut.n_tied_at_cut, cut.n_tied_selected, decided_by_tie_break(cut)) == (3, 2, 2)
    by_id = top_budget(scores, 0.6, sample_ids=np.array([9, 8, 7, 6, 5]))
    assert by_id.indices.tolist() == [0, 3, 2]  # the smaller sample_ids win the tie
    whole = top_budget(scores, 0.8)  # k = 4: the whole tied group fits, the tie-break decides nothing
    assert decided_by_tie_break(whole) == 0 and sorted(whole.indices.tolist()) == [0, 1, 2, 3]


def test_memorization_tie_breaks_on_a_handmade_matrix():
    # eps 1.5: rows 0 and 1 have one forget event each, rows 2-5 none; difficulty = first column.
    losses = np.array(
        [
            [1.0, 2.0, 2.0],
            [1.2, 2.0, 2.0],
            [0.5, 1.0, 1.0],
            [0.7, 1.0, 1.0],
            [0.9, 1.0, 1.0],
            [3.0, 3.0, 3.0],
        ]
    )
    (row,) = memorization_tie_breaks(losses, [0.5], eps=1.5, burn_in=1)
    # k = 3: rows 0 and 1 outright, then the easiest of the four with m = 0 (row 2).
    assert row == {
        "fraction": 0.5,
        "num_selected": 3,
        "cut_value": 0.0,
        "tied_at_cut": 4,
        "decided_by_tie_break": 1,
        "tie_break_share": pytest.approx(1 / 3),
    }
    (none,) = memorization_tie_breaks(losses, [2 / 6], eps=1.5, burn_in=1)
    assert none["decided_by_tie_break"] == 0 and none["tied_at_cut"] == 2


# --- detection quality ---------------------------------------------------------------------------


def naive_average_precision(scores, positives, ids):
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], ids[i]))
    found, total, precisions = 0, sum(bool(p) for p in positives), []
    for rank, i in enumerate(order, start=1):
        if positives[i]:
            found += 1
            precisions.append(found / rank)
    return sum(precisions) / total


@pytest.mark.parametrize("seed", range(6))
def test_average_precision_matches_a_naive_ranking_on_scores_with_and_without_ties(seed):
    rng = np.random.default_rng(seed)
    n = 50
    scores = rng.normal(size=n) if seed % 2 else rng.integers(0, 3, size=n).astype(float)
    positives = rng.random(n) < 0.3
    positives[0] = True
    ids = rng.permutation(n)
    assert average_precision(scores, positives, sample_ids=ids) == pytest.approx(
        naive_average_precision(scores, positives, ids), abs=1e-12
    )
    precision, recall = precision_recall_curve(scores, positives, sample_ids=ids)
    at_budget = precision_recall_at(scores, positives, [0.1, 0.5], sample_ids=ids)
    for fraction, row in zip((0.1, 0.5), at_budget, strict=True):
        k = math.floor(fraction * n + 0.5)
        top = sorted(range(n), key=lambda i: (-scores[i], ids[i]))[:k]
        hits = sum(bool(positives[i]) for i in top)
        assert (row["num_selected"], row["num_found"]) == (k, hits)
        assert row["precision"] == pytest.approx(hits / k) == precision[k - 1]
        assert row["recall"] == pytest.approx(hits / positives.sum()) == recall[k - 1]


def test_average_precision_of_known_rankings():
    positives = np.array([True, False, True, False])
    assert average_precision(np.array([4.0, 3, 2, 1]), positives) == pytest.approx((1 + 2 / 3) / 2)
    assert average_precision(np.array([4.0, 3, 2, 1]), np.array([True, True, False, False])) == 1.0
    # All tied: the ranking is by row index (no ids), so the positives sit at ranks 1 and 3.
    assert average_precision(np.zeros(4), positives) == pytest.approx((1 + 2 / 3) / 2)
    assert math.isnan(average_precision(np.arange(4.0), np.zeros(4, dtype=bool)))


def scored_dataset(losses, truth, canary_ids):
    columns = {loss_column(t + 1): losses[:, t].astype(np.float32) for t in range(losses.shape[1])}
    ids = np.arange(100, 100 + len(losses))
    return Dataset.from_dict({"sample_id": ids, "truth": truth, "carto_canary_id": canary_ids, **columns})


def test_map_written_columns_equal_the_pure_functions_and_feed_detection_quality():
    losses = tie_heavy_matrix(7, n=53).astype(np.float32)  # stored as float32, scored as read back
    rng = np.random.default_rng(0)
    truth = rng.choice([0, 1, 2, 4], size=53, p=[0.7, 0.1, 0.1, 0.1])
    canary_ids = np.where((truth == 2) & (rng.random(53) < 0.6), 0, -1)
    reference = rng.uniform(1.0, 4.0, size=53)
    dataset = scored_dataset(losses, truth, canary_ids)
    scored = add_detector_scores(dataset, eps=EPS, burn_in=BURN_IN, seed=3, batch_size=10, keep_in_memory=True)
    assert set(score_columns(scored.column_names)) == set(DETECTORS)
    for name in DETECTORS:
        expected = detector_scores(name, losses.astype(np.float64), eps=EPS, burn_in=BURN_IN, seed=3)
        np.testing.assert_array_equal(np.asarray(scored[score_column(name)][:]), expected)
    with_ref = add_detector_scores(dataset, ["reference_ratio"], reference=reference, batch_size=10)
    np.testing.assert_array_equal(
        np.asarray(with_ref["carto_score_reference_ratio"][:]),
        detector_scores("reference_ratio", losses, reference=reference),
    )

    quality = dataset_detection_quality(scored, [0.1, 0.25])
    planted = np.isin(truth, [PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")])
    assert quality["planted"]["num_positive"] == planted.sum()
    assert quality["whole_canary"]["num_positive"] == (canary_ids >= 0).sum() > 0
    ids = np.arange(100, 153)
    for name in DETECTORS:
        s = np.asarray(scored[score_column(name)][:])
        for target, mask in (("planted", planted), ("whole_canary", canary_ids >= 0)):
            entry = quality[target]["detectors"][name]
            assert entry["average_precision"] == pytest.approx(naive_average_precision(s, mask, ids))
            assert entry["at_budget"][0]["num_selected"] == 5  # floor(0.1 * 53 + 0.5)
    assert quality == detection_quality(
        {n: np.asarray(scored[score_column(n)][:]) for n in DETECTORS},
        planted_targets(truth, canary_ids),
        [0.1, 0.25],
        sample_ids=ids,
    )


def test_sensitivity_recounts_events_on_subsampled_snapshots():
    losses = random_matrix(9, n=30, t=8)  # 4 epochs of 2 snapshots
    positives = np.zeros(30, dtype=bool)
    positives[:5] = True
    rows = memorization_sensitivity(losses, positives, burn_in=4, snapshots_per_epoch=2, quantiles=[0.1, 0.3])
    assert [(r["snapshots_per_epoch"], r["quantile"]) for r in rows] == [(2, 0.1), (2, 0.3), (1, 0.1), (1, 0.3)]
    for r in rows:
        sub = losses if r["snapshots_per_epoch"] == 2 else losses[:, 1::2]  # each epoch's last snapshot
        assert r["num_snapshots"] == sub.shape[1] and r["burn_in"] == (4 if r["snapshots_per_epoch"] == 2 else 2)
        assert r["eps"] == pytest.approx(np.quantile(sub, r["quantile"]))
        events = [naive_events(row, r["eps"]) for row in sub]
        assert r["num_forget_events"] == sum(events)
        assert r["num_with_forget_events"] == sum(e > 0 for e in events)
        assert r["average_precision_m_alone"] == pytest.approx(naive_average_precision(events, positives, range(30)))


# --- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_refused_with_the_reason():
    losses = random_matrix()
    with_nan = losses.copy()
    with_nan[3, 2] = np.nan
    for name in DETECTORS:
        with pytest.raises(ValueError, match="non-finite"):
            detector_scores(name, with_nan, eps=EPS, burn_in=BURN_IN)
        with pytest.raises(ValueError, match="2-D matrix"):
            detector_scores(name, losses[0], eps=EPS, burn_in=BURN_IN)
    with pytest.raises(ValueError, match=r"unknown detector\(s\) \['loss_rank'\]"):
        detector_scores("loss_rank", losses)
    with pytest.raises(ValueError, match=r"'memorization' needs \['eps'\]"):
        detector_scores("memorization", losses, burn_in=BURN_IN)
    with pytest.raises(ValueError, match="finite and positive"):
        detector_scores("reference_ratio", losses, reference=np.zeros(len(losses)))
    with pytest.raises(ValueError, match="shape"):
        detector_scores("reference_ratio", losses, reference=np.ones(3))
    with pytest.raises(ValueError, match="non-finite"):
        top_budget(np.array([1.0, np.nan]), 0.5)
    with pytest.raises(ValueError, match="eps must be a finite number"):
        memorization_tie_breaks(losses, [0.1], eps=float("nan"), burn_in=BURN_IN)
    with pytest.raises(ValueError, match="whole number of epochs"):
        memorization_sensitivity(losses, np.ones(len(losses), dtype=bool), burn_in=2, snapshots_per_epoch=4)
    with pytest.raises(ValueError, match="shape of scores"):
        average_precision(np.ones(3), np.ones(4, dtype=bool))
    dataset = scored_dataset(losses, np.zeros(len(losses), dtype=int), -np.ones(len(losses), dtype=int))
    with pytest.raises(ValueError, match=r"unknown detector\(s\) \['nope'\]"):
        add_detector_scores(dataset, ["final_loss", "nope"])
    with pytest.raises(ValueError, match=r"'soft_forgetting' needs \['eps'\]"):
        add_detector_scores(dataset, ["soft_forgetting"])
    with pytest.raises(ValueError, match="no carto_score_"):
        dataset_detection_quality(dataset, [0.1])


def test_figures_are_written(tmp_path):
    from hf_carto.core.plots import plot_precision_recall, plot_sensitivity

    losses = random_matrix(3, n=40, t=8)
    positives = np.arange(40) < 8
    curves = {n: precision_recall_curve(detector_scores(n, losses, eps=EPS, burn_in=2), positives) for n in NAIVE}
    aps = {n: average_precision(detector_scores(n, losses, eps=EPS, burn_in=2), positives) for n in NAIVE}
    pr = plot_precision_recall(curves, tmp_path / "pr.png", base_rate=0.2, average_precision=aps, budgets=(0.1,))
    rows = memorization_sensitivity(losses, positives, burn_in=4, snapshots_per_epoch=2, quantiles=[0.1, 0.2])
    sens = plot_sensitivity(rows, tmp_path / "sens.png")
    assert pr.stat().st_size > 1000 and sens.stat().st_size > 1000
