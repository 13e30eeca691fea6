"""fit_cartography over several mapping runs (seeds): combined scores equal the per-run ones combined by hand."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset

from hf_carto.score.cartography import CartographyFit, add_cartography, fit_cartography
from hf_carto.score.scores import difficulty, forget_events

N = 300


def run_dataset(losses: np.ndarray, ids: np.ndarray) -> Dataset:
    columns = {f"carto_loss_{t + 1}": losses[:, t].astype(np.float32) for t in range(losses.shape[1])}
    return Dataset.from_dict({"sample_id": ids, **columns})


def make_runs(snapshots=(5, 5, 7), seed=0):
    """Runs over the same samples with their rows in different orders; returns runs and aligned matrices."""
    rng = np.random.default_rng(seed)
    ids = np.arange(1000, 1000 + N, dtype=np.int64)
    runs, matrices = [], []
    for number, t in enumerate(snapshots):
        losses = rng.uniform(0.0, 3.0, size=(N, t)).astype(np.float32)
        order = rng.permutation(N) if number else np.arange(N)
        runs.append(run_dataset(losses[order], ids[order]))
        matrices.append(losses.astype(np.float64))
    return runs, matrices, ids


@pytest.mark.parametrize("snapshots", [(5, 5, 5), (4, 6, 7)])
def test_combined_scores_equal_the_per_run_scores_combined_by_hand(snapshots):
    runs, matrices, ids = make_runs(snapshots)
    eps, burn_in = 1.2, 2
    fit = fit_cartography(runs, burn_in=burn_in, eps=eps)
    scored = add_cartography(runs, fit)

    d = np.mean([difficulty(m, burn_in) for m in matrices], axis=0)
    events = np.sum([forget_events(m, eps) for m in matrices], axis=0)
    m = events / sum(t - 1 for t in snapshots)
    assert np.asarray(scored["sample_id"]).tolist() == ids.tolist()  # the first run's rows
    np.testing.assert_allclose(scored["carto_difficulty"], d, rtol=1e-12)
    np.testing.assert_allclose(scored["carto_memorization"], m, rtol=1e-12)
    tau_d = np.percentile(d, 75, method="inverted_cdf")
    tau_m = np.percentile(m, 75, method="inverted_cdf")
    assert fit.tau_d == pytest.approx(tau_d) and fit.tau_m == pytest.approx(tau_m)
    expected = (d > tau_d).astype(int) + 2 * (m > tau_m).astype(int)
    assert np.asarray(scored["carto_quadrant"]).tolist() == expected.tolist()
    assert fit.num_runs == 3 and fit.num_with_forget_events == int((events > 0).sum())
    # Summing events over runs finds forgetting a single run misses.
    single = forget_events(matrices[0], eps)
    assert (events > 0).sum() > (single > 0).sum()


def test_a_quantile_eps_is_resolved_on_every_run_pooled():
    runs, matrices, _ = make_runs()
    fit = fit_cartography(runs, burn_in=2, eps="quantile:0.1")
    pooled = np.concatenate([m.astype(np.float32).ravel() for m in matrices])
    assert fit.eps == pytest.approx(float(np.quantile(pooled.astype(np.float64), 0.1)))


def test_a_fit_over_runs_survives_json_and_refuses_a_single_run():
    runs, _, _ = make_runs()
    fit = fit_cartography(runs, burn_in=2, eps=1.0)
    again = CartographyFit.from_dict(fit.to_dict())
    assert again == fit
    with pytest.raises(ValueError, match="combines 3 runs"):
        add_cartography(runs[0], fit)
    with pytest.raises(ValueError, match="combines 3 runs"):
        add_cartography(runs[:2], fit)


def test_runs_of_other_samples_are_refused():
    runs, _, _ = make_runs()
    other = run_dataset(np.ones((N, 5), dtype=np.float32), np.arange(N, dtype=np.int64))
    with pytest.raises(ValueError, match="lacks 300 sample_ids"):
        fit_cartography([runs[0], other], burn_in=2, eps=1.0)
    with pytest.raises(ValueError, match="at least two"):
        fit_cartography([runs[0]], burn_in=2, eps=1.0)
    with pytest.raises(ValueError, match="run 2: burn_in"):
        short = run_dataset(np.ones((N, 2), dtype=np.float32), np.arange(1000, 1000 + N))
        fit_cartography([runs[0], short], burn_in=2, eps=1.0)
