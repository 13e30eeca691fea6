"""Scores against naive per-sample references written straight from the paper's formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hf_carto import (
    Quadrant,
    assign_quadrants,
    difficulty,
    forget_events,
    memorization,
    resolve_eps,
    select_top_memorized,
    training_dynamics,
)
from hf_carto.core.eps import parse_eps

# --- naive references: one sample, one snapshot at a time ---------------------------------------


def naive_difficulty(losses, burn_in):
    return [sum(float(x) for x in row[:burn_in]) / burn_in for row in losses]


def naive_forget_events(losses, eps):
    """Per row, the moves from fitted (below eps) to unfitted (above eps); a loss exactly at eps
    keeps the state (see _naive_forget_events)."""
    return [_naive_forget_events(row, eps) for row in losses]


def naive_inverse_cdf(values, alpha):
    """F^{-1}(alpha): the smallest observed v with #{x <= v} / N >= alpha."""
    ordered = sorted(float(v) for v in values)
    n = len(ordered)
    for v in ordered:
        if sum(1 for x in ordered if x <= v) / n >= alpha:
            return v
    raise AssertionError("unreachable")


def naive_quadrant(d, m, tau_d, tau_m):
    if d <= tau_d and m <= tau_m:
        return 0
    if d > tau_d and m <= tau_m:
        return 1
    if d <= tau_d and m > tau_m:
        return 2
    return 3


# Losses drawn from a small grid so that ties and values exactly equal to eps are common.
GRID = [0.25, 0.5, 1.0, 1.5, 2.0, 4.0]
loss_matrices = st.integers(1, 40).flatmap(
    lambda n: st.integers(2, 7).flatmap(lambda t: arrays(np.float64, (n, t), elements=st.sampled_from(GRID)))
)


@settings(max_examples=150, deadline=None)
@given(losses=loss_matrices, eps=st.sampled_from(GRID + [0.75, 3.0]), data=st.data())
def test_scores_match_naive_reference(losses, eps, data):
    t = losses.shape[1]
    burn_in = data.draw(st.integers(1, t - 1))
    np.testing.assert_allclose(difficulty(losses, burn_in), naive_difficulty(losses, burn_in), rtol=1e-12)
    events = naive_forget_events(losses, eps)
    np.testing.assert_array_equal(forget_events(losses, eps), events)
    np.testing.assert_allclose(memorization(losses, eps), [e / (t - 1) for e in events], rtol=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    losses=loss_matrices,
    alpha_d=st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9, 0.999]),
    alpha_m=st.sampled_from([0.1, 0.25, 0.5, 0.75, 0.9]),
)
def test_quadrants_match_table_1(losses, alpha_d, alpha_m):
    d = difficulty(losses, 1)
    m = memorization(losses, 1.0)
    result = assign_quadrants(d, m, alpha_d, alpha_m)
    tau_d, tau_m = naive_inverse_cdf(d, alpha_d), naive_inverse_cdf(m, alpha_m)
    assert result.tau_d == pytest.approx(tau_d, abs=0)
    assert result.tau_m == pytest.approx(tau_m, abs=0)
    expected = [naive_quadrant(di, mi, tau_d, tau_m) for di, mi in zip(d, m, strict=True)]
    np.testing.assert_array_equal(result.quadrants, expected)
    # F^{-1}(alpha) leaves at most (1 - alpha) N samples strictly above the threshold.
    assert (d > result.tau_d).sum() <= math.floor((1 - alpha_d) * len(d) + 1e-9)
    assert sum(result.counts().values()) == len(d)


def test_forget_event_is_strict_on_both_sides():
    eps = 1.0
    losses = np.array(
        [
            [0.5, 1.0],  # rises to exactly eps: not forgotten
            [1.0, 2.0],  # starts exactly at eps: was never fitted
            [0.5, 1.5],  # a real forget event
            [1.5, 0.5],  # learned, not forgotten
        ]
    )
    np.testing.assert_array_equal(forget_events(losses, eps), [0, 0, 1, 0])
    np.testing.assert_array_equal(memorization(losses, eps), [0.0, 0.0, 1.0, 0.0])  # T = 2


def test_oscillating_sample_has_maximal_memorization():
    losses = np.array([[0.1, 2.0, 0.1, 2.0, 0.1, 2.0], [2.0, 0.1, 2.0, 0.1, 2.0, 0.1]])
    np.testing.assert_allclose(memorization(losses, 1.0), [3 / 5, 2 / 5])


def test_constant_losses_give_no_events_and_flat_quadrants():
    losses = np.full((10, 4), 0.3)
    m = memorization(losses, 1.0)
    assert (m == 0).all()
    result = assign_quadrants(difficulty(losses, 2), m)
    # Everything ties at the threshold, and the rules use '>', so every sample is stable-easy.
    assert result.counts()["stable_easy"] == 10


def test_quadrant_enum_names_and_ids():
    assert Quadrant.names() == ["stable_easy", "ambiguous_hard", "hotspot_memorized", "noisy_outlier"]
    assert [int(q) for q in Quadrant] == [0, 1, 2, 3]
    d = np.array([0.0, 1.0, 0.0, 1.0])
    m = np.array([0.0, 0.0, 1.0, 1.0])
    q = assign_quadrants(d, m, 0.5, 0.5).quadrants
    assert q.tolist() == [
        Quadrant.STABLE_EASY,
        Quadrant.AMBIGUOUS_HARD,
        Quadrant.HOTSPOT_MEMORIZED,
        Quadrant.NOISY_OUTLIER,
    ]


def test_float32_matrix_matches_float64():
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 1.0, size=(500, 6)).astype(np.float32)
    eps = float(np.float32(1.3))
    np.testing.assert_array_equal(forget_events(losses, eps), forget_events(losses.astype(np.float64), eps))
    np.testing.assert_allclose(difficulty(losses, 3), difficulty(losses.astype(np.float64), 3), rtol=1e-12)


# --- eps policies ----------------------------------------------------------------------------


def test_resolve_eps_policies():
    losses = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert resolve_eps(losses, 4.7055) == 4.7055
    assert resolve_eps(losses, "4.7055") == 4.7055
    assert resolve_eps(losses, "quantile:0.5") == pytest.approx(3.5)
    assert resolve_eps(losses, "quantile:0") == 1.0
    assert resolve_eps(losses, "min+0.25") == 1.25
    assert resolve_eps(losses, "min*(1+0.1)") == pytest.approx(1.1)
    assert resolve_eps(losses, "min*1.5") == 1.5
    assert resolve_eps(losses, " MIN + 1 ") == 2.0


@pytest.mark.parametrize("spec", ["quantile:1.5", "quantile:x", "median", "min-1", float("nan"), None, True])
def test_resolve_eps_rejects_bad_policies(spec):
    with pytest.raises(ValueError, match="eps"):
        resolve_eps(np.ones((2, 2)), spec)


def test_parse_eps_needs_no_losses():
    assert parse_eps("quantile:0.05") == ("quantile", 0.05)
    assert parse_eps(3) == ("value", 3.0)


# --- budget selection ------------------------------------------------------------------------


def naive_budget(m, fraction, d=None, ids=None):
    n = len(m)
    k = math.floor(fraction * n + 0.5)
    ids = list(range(n)) if ids is None else list(ids)
    d = [0.0] * n if d is None else list(d)
    order = sorted(range(n), key=lambda i: (-m[i], d[i], ids[i]))
    return order[:k]


@settings(max_examples=150, deadline=None)
@given(
    m=arrays(np.float64, st.integers(1, 60), elements=st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])),
    fraction=st.floats(0.0, 1.0),
    use_d=st.booleans(),
    use_ids=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_budget_selection_matches_sorted_reference(m, fraction, use_d, use_ids, seed):
    rng = np.random.default_rng(seed)
    n = m.size
    d = rng.choice([0.5, 1.0, 2.0], size=n) if use_d else None
    ids = rng.permutation(10 * n)[:n] if use_ids else None
    sel = select_top_memorized(m, fraction, difficulty=d, sample_ids=ids)
    expected = naive_budget(m, fraction, d, ids)
    assert sel.indices.tolist() == expected
    assert sel.n_selected == len(expected)
    if expected:
        cut = m[expected[-1]]
        assert sel.cut_value == cut
        assert sel.n_tied_at_cut == int((m == cut).sum())
        assert sel.n_tied_selected == sum(1 for i in expected if m[i] == cut)
        assert sel.n_tied_dropped == sel.n_tied_at_cut - sel.n_tied_selected
        assert sel.mask(n).sum() == len(expected)


def test_budget_reports_the_ties_it_cut():
    m = np.array([1.0, 0.5, 0.5, 0.5, 0.5, 0.0])
    sel = select_top_memorized(m, 0.5)  # k = 3: one clear winner, then 2 of 4 tied at 0.5
    assert sel.indices.tolist() == [0, 1, 2]
    assert (sel.n_tied_at_cut, sel.n_tied_selected, sel.n_tied_dropped) == (4, 2, 2)


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_budget_rejects_bad_fraction(fraction):
    with pytest.raises(ValueError, match="fraction"):
        select_top_memorized(np.zeros(3), fraction)


# --- training dynamics ---------------------------------------------------------------------


def test_training_dynamics_against_loops():
    rng = np.random.default_rng(1)
    losses = rng.choice([0.2, 0.8, 1.6, 3.2], size=(50, 5))
    eps = 1.0
    stats = training_dynamics(losses, eps)
    for i, row in enumerate(losses):
        assert stats.mean_loss[i] == pytest.approx(sum(row) / len(row))
        mean = sum(row) / len(row)
        assert stats.loss_std[i] == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in row) / len(row)))
        # dataset cartography's confidence and variability: mean and std of p = exp(-loss)
        probs = [math.exp(-x) for x in row]
        mean_p = sum(probs) / len(probs)
        assert stats.confidence[i] == pytest.approx(mean_p)
        assert stats.variability[i] == pytest.approx(math.sqrt(sum((q - mean_p) ** 2 for q in probs) / len(probs)))
        assert stats.min[i] == min(row)
        assert stats.final[i] == row[-1]
        below = [t + 1 for t, x in enumerate(row) if x < eps]
        assert stats.first_learned[i] == (below[0] if below else -1)
        assert stats.never_learned[i] == (not below)
    np.testing.assert_array_equal(stats.forget_events, naive_forget_events(losses, eps))
    assert set(stats.as_columns()) >= {
        "carto_variability",
        "carto_confidence",
        "carto_loss_std",
        "carto_never_learned",
    }


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: difficulty(np.ones(5), 1), "2-D"),
        (lambda: difficulty(np.ones((0, 3)), 1), "N = 0"),
        (lambda: difficulty(np.ones((3, 1)), 1), "T = 1"),
        (lambda: memorization(np.ones((3, 1)), 1.0), "at least 2"),
        (lambda: difficulty(np.ones((3, 4)), 0), r"burn_in must be in \[1, T - 1\] = \[1, 3\]"),
        (lambda: difficulty(np.ones((3, 4)), 4), "got 4"),
        (lambda: difficulty(np.ones((3, 4)), 1.5), "integer"),
        (lambda: forget_events(np.ones((3, 4)), float("inf")), "finite"),
        (lambda: assign_quadrants(np.ones(3), np.ones(3), alpha_d=1.0), "alpha_d"),
        (lambda: assign_quadrants(np.ones(3), np.ones(3), alpha_m=0.0), "alpha_m"),
        (lambda: assign_quadrants(np.ones(3), np.ones(4)), "equal length"),
        (lambda: assign_quadrants(np.array([1.0, np.nan]), np.ones(2)), "difficulty has 1 non-finite"),
    ],
)
def test_bad_input_raises_named_errors(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_finite_losses_name_rows_and_sample_ids():
    losses = np.ones((10, 3))
    losses[[2, 7], 1] = np.nan
    losses[9, 0] = np.inf
    with pytest.raises(ValueError, match=r"3 of 10 samples; first rows: \[2, 7, 9\]"):
        memorization(losses, 0.5)
    from hf_carto.core.eps import check_loss_matrix

    with pytest.raises(ValueError, match=r"first sample_ids: \[102, 107, 109\]"):
        check_loss_matrix(losses, sample_ids=np.arange(100, 110))


# --- planted kinds against quadrants -------------------------------------------------------------


def naive_planted_table(truth, quadrants):
    from hf_carto.core.columns import PLANTED_NAMES

    table = {}
    for k, kind in enumerate(PLANTED_NAMES):
        row = {name: 0 for name in Quadrant.names()}
        seen = False
        for t, q in zip(truth, quadrants, strict=True):
            if t == k:
                seen = True
                row[Quadrant(q).name.lower()] += 1
        if seen:
            table[kind] = row
    return table


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 3)), min_size=0, max_size=60))
def test_planted_vs_quadrant_matches_a_naive_count(pairs):
    from hf_carto.score.scores import planted_vs_quadrant

    truth = np.array([t for t, _ in pairs], dtype=np.int64)
    quadrants = np.array([q for _, q in pairs], dtype=np.int8)
    table = planted_vs_quadrant(truth, quadrants)
    assert table == naive_planted_table(truth.tolist(), quadrants.tolist())
    assert list(table) == [k for k in naive_planted_table(truth.tolist(), quadrants.tolist())]  # id order
    assert sum(sum(row.values()) for row in table.values()) == len(pairs)


def test_planted_vs_quadrant_rejects_unknown_ids():
    from hf_carto.score.scores import planted_vs_quadrant

    with pytest.raises(ValueError, match=r"truth has 1 ids outside \[0, 4\]"):
        planted_vs_quadrant(np.array([0, 5]), np.array([0, 0]))
    with pytest.raises(ValueError, match="quadrants has 1 ids"):
        planted_vs_quadrant(np.array([0, 1]), np.array([0, -1]))
    with pytest.raises(ValueError, match="equal length"):
        planted_vs_quadrant(np.array([0, 1]), np.array([0]))


def _naive_forget_events(row, eps: float) -> int:
    """The rule written as a walk: a row is fitted below eps and unfitted above it; a loss exactly
    at eps keeps the last state; an event is each move from fitted to unfitted."""
    state, events = None, 0
    for value in row:
        value = float(value)
        now = "fitted" if value < eps else "unfitted" if value > eps else state
        if state == "fitted" and now == "unfitted":
            events += 1
        state = now
    return events


def test_a_loss_exactly_at_eps_carries_the_state_across():
    assert forget_events(np.array([[0.5, 1.0, 2.0]]), eps=1.0).tolist() == [1]  # fitted, at eps, above
    assert forget_events(np.array([[0.5, 1.0, 0.5]]), eps=1.0).tolist() == [0]  # never above
    assert forget_events(np.array([[2.0, 1.0, 0.5, 1.0, 2.0]]), eps=1.0).tolist() == [1]
    assert forget_events(np.array([[1.0, 1.0, 2.0]]), eps=1.0).tolist() == [0]  # never fitted
    assert forget_events(np.array([[0.5, 2.0, 1.0, 2.0]]), eps=1.0).tolist() == [1]  # no refit between
    # float32 losses are compared with eps in float64: 0.7 in float32 is below 0.7
    assert forget_events(np.array([[0.7, 0.8]], dtype=np.float32), eps=0.7).tolist() == [1]


def test_every_scoring_path_counts_forget_events_like_the_walk_on_grid_losses():
    from datasets import Dataset

    from hf_carto import add_cartography
    from hf_carto.core.columns import read_columns
    from hf_carto.score.detectors import memorization_score

    rng = np.random.default_rng(17)
    losses = rng.choice([0.25, 0.5, 1.0, 2.0], size=(3000, 7))
    eps = 1.0  # a grid value: many losses sit exactly at eps
    naive = np.array([_naive_forget_events(row, eps) for row in losses])
    assert (losses == eps).mean() > 0.2 and naive.max() >= 2
    assert forget_events(losses, eps).tolist() == naive.tolist()
    np.testing.assert_array_equal(memorization(losses, eps), naive / 6.0)
    assert np.floor(memorization_score(losses, eps=eps, burn_in=2)).astype(int).tolist() == naive.tolist()
    ds = Dataset.from_dict({f"carto_loss_{t + 1}": losses[:, t] for t in range(7)})
    scored = add_cartography(ds, burn_in=2, eps=eps, batch_size=401)
    np.testing.assert_array_equal(read_columns(scored, ["carto_memorization"])["carto_memorization"], naive / 6.0)
