"""The default job, shrunk: a real training run whose outputs must be consistent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hf_carto.core.columns import read_columns
from hf_carto.data.generated import CorpusConfig
from hf_carto.experiment.loop_demo import DemoConfig, run_demo
from hf_carto.score.scored_io import load_scored


@pytest.mark.slow
def test_small_demo_end_to_end(tmp_path):
    config = DemoConfig(
        output_dir=str(tmp_path / "demo"),
        corpus=CorpusConfig(num_documents=150, num_duplicate_groups=4, num_canaries=4, num_noise_documents=6),
        vocab_size=300,
        epochs=3,
        snapshots_per_epoch=2,
        batch_size=16,
        n_embd=32,
    )
    report = run_demo(config)
    out = tmp_path / "demo"
    assert (out / "data_map.png").stat().st_size > 10_000
    assert json.loads((out / "report.json").read_text())["num_snapshots"] == 6
    scored, fit = load_scored(out / "scored")
    assert fit.num_snapshots == 6 and fit.burn_in == 1
    losses = np.stack([read_columns(scored, [c])[c] for c in fit.loss_columns], axis=1)
    assert np.isfinite(losses).all()
    # Training lowers the eval-mode loss of the training set as a whole.
    assert losses[:, -1].mean() < losses[:, 0].mean()
    table = report["planted_vs_quadrant"]
    assert sum(sum(row.values()) for row in table.values()) == len(scored) == report["num_samples"]
    assert sorted(scored["sample_id"][:]) == list(range(len(scored)))
    # Every sample's own leakage evidence and duplicate cluster; the planted duplicates are found.
    from hf_carto.core.columns import DUP_COLUMNS, LEAK_COLUMNS, PLANTED_NAMES

    assert set(LEAK_COLUMNS + DUP_COLUMNS) <= set(scored.column_names)
    cols = read_columns(scored, ["truth", "carto_dup_exact_size", "carto_leak_k", "carto_leak_loss"])
    duplicated = cols["carto_dup_exact_size"] > 1
    assert duplicated[cols["truth"] == PLANTED_NAMES.index("duplicate")].all()
    assert (cols["carto_leak_k"] > 0).all() and np.isfinite(cols["carto_leak_loss"]).all()
    assert report["summary"]["leakage"]["all"]["rows"] == len(scored)
    assert "hotspot_duplication" in report["summary"]
    assert "carto_leak_extractable" in (out / "data_map.html").read_text()
