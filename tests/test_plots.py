"""The PNG data map draws memorization inside [0, 1] however it is jittered."""

from __future__ import annotations

import numpy as np

from hf_carto.core import plots


def test_the_png_data_map_keeps_jittered_memorization_between_0_and_1(tmp_path, monkeypatch):
    drawn = []
    real = plots.new_figure

    def keep(figsize):
        fig, ax = real(figsize)
        drawn.append(ax)
        return fig, ax

    monkeypatch.setattr(plots, "new_figure", keep)
    rng = np.random.default_rng(0)
    m = rng.choice([0.0, 0.5, 1.0], size=600)  # T = 3: many points at both ends
    d = rng.uniform(0, 5, size=600)
    q = ((d > 2.5).astype(int) + 2 * (m > 0.5).astype(int)).astype(np.int64)
    plots.plot_data_map(d, m, q, tmp_path / "map.png", tau_d=2.5, tau_m=0.5, num_snapshots=3, seed=4)
    y = np.concatenate([c.get_offsets()[:, 1] for c in drawn[0].collections if len(c.get_offsets())])
    assert y.size == 600 and y.min() >= 0.0 and y.max() <= 1.0
    assert np.unique(np.round(y, 6)).size > 300  # still jittered, not clipped onto the three values
