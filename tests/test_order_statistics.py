"""Exact quantiles read in batches (radix selection) against numpy on whole arrays, and the
out-of-core fit against the in-memory array path, including buckets so small that every
selection needs extra passes."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

import hf_carto.score.order_statistics as order_statistics
from hf_carto import add_cartography, assign_quadrants, difficulty, fit_cartography, memorization, resolve_eps
from hf_carto.score.order_statistics import inverted_cdf_rank, lerp, linear_quantile_ranks, select_ranks


def _values(rng, kind: str, n: int, dtype) -> np.ndarray:
    if kind == "continuous":
        x = rng.normal(size=n) * rng.choice([1e-3, 1.0, 1e6])
    elif kind == "ties":
        x = np.round(rng.normal(size=n), 1)
    elif kind == "constant":
        x = np.full(n, 2.5)
    else:  # signed zeros, negatives, infinities and subnormals
        x = rng.choice([0.0, -0.0, -1.5, np.inf, -np.inf, 5e-324, 1e-45, 3.0], size=n)
    return x.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["continuous", "ties", "constant", "edges"])
@pytest.mark.parametrize("max_bucket", [1 << 24, 3])
def test_select_ranks_equals_sorting(monkeypatch, dtype, kind, max_bucket):
    monkeypatch.setattr(order_statistics, "MAX_BUCKET", max_bucket)
    rng = np.random.default_rng(hash((kind, max_bucket)) % 2**32)
    for _ in range(5):
        n = int(rng.integers(1, 2000))
        x = _values(rng, kind, n, dtype)
        batch = int(rng.integers(1, 300))
        ranks = sorted({0, n - 1, *rng.integers(0, n, size=6).tolist()})
        expected = np.sort(x)

        def batches(x=x, batch=batch):
            return (x[i : i + batch] for i in range(0, len(x), batch))

        for wanted in (ranks, lambda count, ranks=ranks: [r for r in ranks if r < count]):
            found = select_ranks(batches, wanted, dtype)
            assert sorted(found) == ranks
            for r in ranks:
                assert found[r] == expected[r] and found[r].dtype == dtype


def test_select_ranks_refuses_a_rank_past_the_end():
    with pytest.raises(ValueError, match="rank 5 is outside the 3 values read"):
        select_ranks(lambda: [np.arange(3.0)], lambda count: [count + 2])


def test_rank_formulas_match_numpy_quantile_and_percentile():
    rng = np.random.default_rng(0)
    for n in range(1, 120):
        # q a Python float, as parse_eps gives it (a numpy float64 q would interpolate in float64).
        for q in [0.0, 1e-9, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.75, 0.9, 0.999, 1.0, *rng.random(4).tolist()]:
            x = np.sort(rng.gamma(2.0, size=n)).astype(np.float32)
            assert x[inverted_cdf_rank(n, q)] == np.percentile(x, 100 * q, method="inverted_cdf")
            below, above, weight = linear_quantile_ranks(n, q)
            assert lerp(x[below], x[above], weight) == float(np.quantile(x, q))


def _dataset(losses):
    columns = {f"carto_loss_{t + 1}": losses[:, t] for t in range(losses.shape[1])}
    columns["sample_id"] = np.arange(len(losses), dtype=np.int64)
    return Dataset.from_dict(columns)


@pytest.mark.parametrize("eps", [1.0, "quantile:0.3", "quantile:0.97", "min+0.5", "min*(1+1.5)"])
@pytest.mark.parametrize("shape", ["grid", "continuous", "constant"])
@pytest.mark.parametrize("max_bucket", [1 << 24, 7])
def test_streamed_fit_equals_the_whole_matrix(monkeypatch, eps, shape, max_bucket):
    monkeypatch.setattr(order_statistics, "MAX_BUCKET", max_bucket)
    rng = np.random.default_rng(7)
    n, t = 503, 6
    if shape == "grid":  # many ties and many forget events, like a memorizing run
        losses = rng.integers(0, 8, size=(n, t)).astype(np.float32) / 2
    elif shape == "continuous":
        losses = rng.gamma(2.0, size=(n, t)).astype(np.float32)
    else:
        losses = np.full((n, t), 1.25, dtype=np.float32)
    for alpha_d, alpha_m, burn_in in [(0.75, 0.75, 2), (0.1, 0.5, 1), (0.999, 0.2, 5)]:
        fit = fit_cartography(
            _dataset(losses), burn_in=burn_in, eps=eps, alpha_d=alpha_d, alpha_m=alpha_m, batch_size=37
        )
        eps_value = resolve_eps(losses, eps)
        d, m = difficulty(losses, burn_in), memorization(losses, eps_value)
        reference = assign_quadrants(d, m, alpha_d, alpha_m)
        assert fit.eps == eps_value
        assert (fit.tau_d, fit.tau_m) == (reference.tau_d, reference.tau_m)
        assert fit.num_with_forget_events == int((m > 0).sum())


def test_streamed_fit_leaves_out_non_finite_rows_when_allowed(monkeypatch):
    monkeypatch.setattr(order_statistics, "MAX_BUCKET", 5)
    rng = np.random.default_rng(3)
    losses = rng.gamma(2.0, size=(300, 4)).astype(np.float32)
    losses[rng.random(300) < 0.2, 1] = np.nan
    fit = fit_cartography(_dataset(losses), burn_in=1, eps="quantile:0.4", allow_nonfinite=True, batch_size=16)
    kept = losses[np.isfinite(losses).all(axis=1)]
    eps_value = resolve_eps(kept, "quantile:0.4")
    reference = assign_quadrants(difficulty(kept, 1), memorization(kept, eps_value), 0.75, 0.75)
    assert (fit.eps, fit.tau_d, fit.tau_m) == (eps_value, reference.tau_d, reference.tau_m)


def test_streamed_fit_and_scores_equal_the_whole_matrix_on_signed_zeros():
    """-0.0 next to 0.0: a mean or a minimum can keep either sign, depending on the order of the
    arithmetic; the streamed fit and the columns written give what the whole matrix gives."""
    rng = np.random.default_rng(11)
    losses = rng.choice(np.array([-0.0, 0.0, 0.5, 2.0], dtype=np.float32), size=(200, 4))
    for eps in ["min*2", "min+0.5", "quantile:0.3", 0.25]:
        for burn_in in (1, 2, 3):
            fit = fit_cartography(_dataset(losses), burn_in=burn_in, eps=eps, batch_size=17)
            eps_value = resolve_eps(losses, eps)
            d, m = difficulty(losses, burn_in), memorization(losses, eps_value)
            reference = assign_quadrants(d, m, 0.75, 0.75)
            assert repr(fit.eps) == repr(eps_value)  # the sign of a zero too
            assert (repr(fit.tau_d), fit.tau_m) == (repr(reference.tau_d), reference.tau_m)
            scored = add_cartography(_dataset(losses), fit)
            assert np.asarray(scored["carto_difficulty"]).tobytes() == d.tobytes()
            assert np.array_equal(np.asarray(scored["carto_memorization"]), m)


def test_streamed_quantile_eps_reads_integer_losses_as_float64_first():
    """Integer loss columns are read as the float64 values a matrix would hold, then rounded to
    float32 for a quantile eps: int64 past 2^53 rounds differently straight to float32."""
    rng = np.random.default_rng(12)
    # half a float32 step above an even float32 value, plus 1: float64 drops the 1 and float32 then
    # rounds the tie down to even; straight to float32 the 1 rounds it up
    losses = 2**54 + rng.integers(0, 2**9, size=(200, 4)) * 2**32 + 2**30 + 1
    assert (losses.astype(np.float32) != losses.astype(np.float64).astype(np.float32)).all()
    for eps in ["quantile:0.5", "quantile:0.9"]:
        from_integers = fit_cartography(_dataset(losses), burn_in=2, eps=eps, batch_size=17)
        from_floats = fit_cartography(_dataset(losses.astype(np.float64)), burn_in=2, eps=eps, batch_size=17)
        assert from_integers == from_floats
        assert from_integers.eps != float(np.quantile(losses.astype(np.float32), float(eps.split(":")[1])))
