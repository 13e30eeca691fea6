"""TensorBoard logging of a mapping run and of its scores, read back with TensorBoard's own reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from test_callback import IDS, N, stock_trainer  # the stock Trainer on tiny random blocks

from hf_carto.core.columns import Quadrant
from hf_carto.core.eps import resolve_eps
from hf_carto.core.kernel import forget_event_counts
from hf_carto.record.callback import CartographyCallback
from hf_carto.record.merge import load_loss_matrix
from hf_carto.record.trackers import log_cartography, tracker_log_dir
from hf_carto.score.cartography import add_cartography, fit_cartography

pytest.importorskip("tensorboard", reason="tensorboard is a test dependency: pip install -e '.[test]'")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

EPS = "quantile:0.3"


def read_events(folder: Path) -> EventAccumulator:
    events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "histograms": 0, "images": 0})
    events.Reload()
    return events


def test_each_snapshot_logs_the_forget_fraction_and_the_loss_histogram(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = CartographyCallback("eval", snapshot_every=3, progress=False, eps=EPS)
    stock_trainer(
        tmp_path, callback, with_loss_func=False, num_train_epochs=2, learning_rate=2e-2, report_to=["tensorboard"]
    ).train()

    matrix = load_loss_matrix(tmp_path, IDS)
    events = read_events(tracker_log_dir(tmp_path))
    steps = [info["step"] for info in matrix.snapshots.values()]
    assert steps == [3, 6, 9, 12, 15, 18]
    fractions = events.Scalars("carto/forget_fraction")
    assert [e.step for e in fractions] == steps
    # Recomputed by hand from the merged matrix: eps resolved on the snapshots recorded so far.
    for t, event in enumerate(fractions, start=1):
        so_far = matrix.losses[:, :t].astype(np.float64)
        expected = 0.0 if t < 2 else (forget_event_counts(so_far, resolve_eps(so_far, EPS)) > 0).mean()
        assert event.value == pytest.approx(expected, abs=1e-6)
    assert max(e.value for e in fractions) > 0  # the run forgets something, so the check above has teeth
    histograms = events.Histograms("carto/loss")
    assert [h.step for h in histograms] == steps
    last = histograms[-1].histogram_value
    assert last.num == N and last.min == pytest.approx(matrix.losses[:, -1].min(), rel=1e-5)
    assert last.sum == pytest.approx(matrix.losses[:, -1].astype(np.float64).sum(), rel=1e-4)


def test_no_events_without_report_to(tmp_path, monkeypatch):
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    callback = CartographyCallback("eval", progress=False)
    stock_trainer(tmp_path, callback, with_loss_func=False, num_train_epochs=1).train()
    assert not tracker_log_dir(tmp_path).exists()


def test_scores_log_quadrant_counts_thresholds_and_the_data_map(tmp_path):
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.0, 3.0, size=(200, 5))
    dataset = Dataset.from_dict({f"carto_loss_{t + 1}": losses[:, t] for t in range(5)})
    fit = fit_cartography(dataset, burn_in=2, eps=1.0)
    scored = add_cartography(dataset, fit)
    logged = log_cartography(scored, fit, tmp_path / "tb", step=7)

    events = read_events(tmp_path / "tb")
    quadrants = np.asarray(scored["carto_quadrant"])
    for quadrant in Quadrant:
        (event,) = events.Scalars(f"carto/quadrant/{quadrant.name.lower()}")
        assert event.step == 7 and event.value == (quadrants == quadrant).sum()
    assert events.Scalars("carto/tau_d")[0].value == pytest.approx(fit.tau_d)
    assert events.Scalars("carto/tau_m")[0].value == pytest.approx(fit.tau_m)
    assert logged["carto/eps"] == 1.0
    (image,) = events.Images("carto/data_map")
    assert image.width > 100 and image.height > 100 and image.encoded_image_string[:4] == b"\x89PNG"


def test_logging_unscored_data_is_refused(tmp_path):
    dataset = Dataset.from_dict({"carto_loss_1": [1.0], "carto_loss_2": [2.0]})
    with pytest.raises(ValueError, match="score it first"):
        log_cartography(dataset, None, tmp_path)
