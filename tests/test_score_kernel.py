"""The scoring kernel against per-sample loops, and every scoring path against the kernel, to the bit."""

from __future__ import annotations

import math

import numpy as np
import pytest
from datasets import Dataset

from hf_carto.core.columns import read_columns
from hf_carto.core.kernel import (
    burn_in_difficulty,
    difficulty_and_memorization,
    forget_count_dtype,
    forget_event_counts,
    memorization_rate,
    never_below,
)
from hf_carto.score import combined_runs, detectors, scores
from hf_carto.score.cartography import add_cartography, fit_cartography

EPS = 1.0
GRID = np.array([0.25, 0.5, EPS, 2.0, 4.0])  # a loss exactly at eps is common


def naive_forget_events(row, eps: float) -> int:
    """One sample, one snapshot at a time: fitted below eps, unfitted above it, the state kept at
    eps; anything else (NaN) is not fitted. An event is a move from fitted to above eps."""
    fitted, events = False, 0
    for t, value in enumerate(float(v) for v in row):
        if t and fitted and value > eps:
            events += 1
        if value < eps:
            fitted = True
        elif value > eps:
            fitted = False
        elif value != eps:  # NaN
            fitted = False
    return events


def naive_difficulty(row, burn_in: int) -> float:
    return sum(float(v) for v in row[:burn_in]) / burn_in


def random_losses(rng, n: int, t: int, dtype) -> np.ndarray:
    """Grid values (ties at eps) mixed with continuous ones over a wide range, and a few -0.0."""
    losses = rng.choice(GRID, size=(n, t))
    spread = rng.random((n, t)) < 0.5
    losses[spread] = np.abs(rng.standard_normal(spread.sum())) * 10.0 ** rng.integers(-3, 3, spread.sum())
    losses[: n // 20, 0] = -0.0
    return losses.astype(dtype)


def columns_of(losses: np.ndarray) -> list[np.ndarray]:
    return [losses[:, t].copy() for t in range(losses.shape[1])]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("snapshots", [2, 3, 4, 9, 13])
def test_the_kernel_matches_per_sample_loops_in_both_forms(dtype, snapshots):
    rng = np.random.default_rng(snapshots)
    losses = random_losses(rng, 400, snapshots, dtype)
    columns = columns_of(losses)
    for eps in (EPS, float(np.float32(0.7)), 0.7):
        naive = [naive_forget_events(row, eps) for row in losses]
        assert forget_event_counts(losses, eps).tolist() == naive
        assert forget_event_counts(columns, eps, dtype=forget_count_dtype(snapshots)).tolist() == naive
        never = [all(not float(v) < eps for v in row) for row in losses]
        assert never_below(losses, eps).tolist() == never == never_below(columns, eps).tolist()
    for burn_in in range(1, snapshots):
        from_matrix = burn_in_difficulty(losses, burn_in)
        from_columns = burn_in_difficulty(columns, burn_in)
        assert from_matrix.dtype == from_columns.dtype == np.float64
        assert from_matrix.tobytes() == from_columns.tobytes()
        np.testing.assert_allclose(from_matrix, [naive_difficulty(row, burn_in) for row in losses], rtol=1e-12)
        d, m = difficulty_and_memorization(columns, burn_in, EPS)
        assert d.tobytes() == from_matrix.tobytes()
        assert m.tolist() == [naive_forget_events(row, EPS) / (snapshots - 1) for row in losses]


def test_the_kernel_reads_nan_as_never_fitted_and_never_above_eps():
    losses = np.array([[0.5, np.nan, 2.0], [np.nan, 0.5, 2.0], [0.5, 2.0, np.nan], [2.0, np.nan, 2.0]])
    assert forget_event_counts(losses, EPS).tolist() == [naive_forget_events(row, EPS) for row in losses]
    assert forget_event_counts(losses, EPS).tolist() == [0, 1, 1, 0]
    assert never_below(losses, EPS).tolist() == [False, False, False, True]
    assert np.isnan(burn_in_difficulty(losses, 2)).tolist() == [True, True, False, True]
    assert memorization_rate(np.array([0, 1, 2]), 3).tolist() == [0.0, 0.5, 1.0]


def test_the_matrix_callers_refuse_nan_before_the_kernel():
    losses = np.array([[0.5, np.nan, 2.0], [0.5, 2.0, 0.5]])
    for call in (
        lambda: scores.difficulty(losses, 1),
        lambda: scores.forget_events(losses, EPS),
        lambda: scores.memorization(losses, EPS),
        lambda: scores.never_learned(losses, EPS),
        lambda: detectors.memorization_score(losses, eps=EPS, burn_in=1),
    ):
        with pytest.raises(ValueError, match="non-finite"):
            call()
    dataset = Dataset.from_dict({f"carto_loss_{t + 1}": losses[:, t] for t in range(3)})
    with pytest.raises(ValueError, match="non-finite"):
        fit_cartography(dataset, burn_in=1, eps=EPS)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_every_caller_scores_with_the_kernel_to_the_bit(dtype):
    rng = np.random.default_rng(11)
    snapshots, burn_in = 9, 4
    losses = random_losses(rng, 600, snapshots, dtype)
    events = forget_event_counts(losses, EPS)
    d = burn_in_difficulty(losses, burn_in)
    m = memorization_rate(events, snapshots)

    # The loss-matrix scores.
    assert scores.difficulty(losses, burn_in).tobytes() == d.tobytes()
    assert scores.forget_events(losses, EPS).tolist() == events.tolist()
    assert scores.memorization(losses, EPS).tobytes() == m.tobytes()
    assert scores.training_dynamics(losses, EPS).forget_events.tolist() == events.tolist()

    # The detectors: forget events plus a difficulty tie-break in (0, 1).
    score = detectors.memorization_score(losses, eps=EPS, burn_in=burn_in)
    assert score.tobytes() == (events.astype(np.float64) + (0.5 - np.arctan(d) / math.pi)).tobytes()

    # The dataset path, streamed in batches from the stored columns.
    dataset = Dataset.from_dict({f"carto_loss_{t + 1}": losses[:, t] for t in range(snapshots)})
    fit = fit_cartography(dataset, burn_in=burn_in, eps=EPS, batch_size=97)
    scored = read_columns(add_cartography(dataset, fit, batch_size=97), ["carto_difficulty", "carto_memorization"])
    assert scored["carto_difficulty"].tobytes() == d.tobytes()
    assert scored["carto_memorization"].tobytes() == m.tobytes()
    assert fit.num_with_forget_events == int((events > 0).sum())
    assert fit.num_never_learned == int(never_below(losses, EPS).sum())

    # Several runs: each run's kernel scores, combined.
    other = random_losses(np.random.default_rng(12), 600, snapshots - 2, np.float64)
    matrices = [losses.astype(np.float64), other]
    d_runs, m_runs = combined_runs.combined_scores(matrices, burn_in, EPS)
    want_d = np.mean([burn_in_difficulty(x, burn_in) for x in matrices], axis=0)
    want_events = forget_event_counts(matrices[0], EPS) + forget_event_counts(other, EPS)
    assert d_runs.tobytes() == want_d.tobytes()
    assert m_runs.tobytes() == (want_events / float(2 * snapshots - 4)).tobytes()
