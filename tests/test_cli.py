"""The hf-carto command line, in process through main() and once through the installed script."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from hf_carto.cli import main
from hf_carto.io import FIT_FILE, SUMMARY_FILE


@pytest.fixture()
def loss_parquet(tmp_path):
    rng = np.random.default_rng(0)
    losses = rng.choice([0.2, 0.9, 1.8, 3.5], size=(400, 5)).astype(np.float32)
    cols = {f"carto_loss_{t + 1}": losses[:, t] for t in range(5)}
    cols["sample_id"] = np.arange(400, dtype=np.int64)
    path = tmp_path / "losses.parquet"
    Dataset.from_dict(cols).to_parquet(str(path))
    return path


def test_score_then_summary(tmp_path, loss_parquet, capsys):
    out = tmp_path / "scored"
    assert (
        main(
            [
                "score",
                str(loss_parquet),
                str(out),
                "--burn-in",
                "2",
                "--eps",
                "quantile:0.3",
                "--alpha",
                "0",
                "--num-proc",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "hotspot_memorized" in printed and f"wrote {out}" in printed
    scored = load_from_disk(str(out))
    assert {"carto_quadrant", "carto_loss_weight", "carto_keep"} <= set(scored.column_names)
    fit = json.loads((out / FIT_FILE).read_text())
    summary = json.loads((out / SUMMARY_FILE).read_text())
    assert fit["burn_in"] == 2 and fit["eps_spec"] == "quantile:0.3"
    hotspots = summary["quadrants"]["hotspot_memorized"]["count"]
    noisy = summary["quadrants"]["noisy_outlier"]["count"]
    assert summary["weights"]["num_removed"] == hotspots + noisy  # alpha 0 removes hotspots

    assert main(["summary", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["quadrants"]["hotspot_memorized"]["count"] == hotspots


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["score", "{tmp}/missing", "{tmp}/o", "--burn-in", "1", "--eps", "1"], "missing: no such file"),
        (["score", "{parquet}", "{tmp}/o", "--burn-in", "9", "--eps", "1"], "burn_in must be in"),
        (["score", "{parquet}", "{tmp}/o", "--burn-in", "1", "--eps", "often"], "unknown eps policy"),
        (["score", "{parquet}", "{tmp}", "--burn-in", "1", "--eps", "1"], "already exists"),
    ],
)
def test_user_errors_exit_2_with_a_named_problem(tmp_path, loss_parquet, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, parquet=loss_parquet) for a in argv]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_installed_console_script_runs(tmp_path, loss_parquet):
    exe = shutil.which("hf-carto") or str(__import__("pathlib").Path(sys.executable).parent / "hf-carto")
    gen = subprocess.run(
        [exe, "generate", str(tmp_path / "corpus"), "--num-documents", "50"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "documents to" in gen.stdout
    corpus = load_from_disk(str(tmp_path / "corpus"))
    assert corpus.features["truth"].names == ["ordinary", "duplicate", "canary", "noise"]
    bad = subprocess.run(
        [exe, "score", str(tmp_path / "corpus"), str(tmp_path / "o"), "--burn-in", "1", "--eps", "1"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "no 'carto_loss_{t}' columns found" in bad.stderr


def test_merge_then_score(tmp_path, capsys):
    from hf_carto.recording import LossStore, RecordingSettings

    store = LossStore(tmp_path / "run")
    store.create_or_check(RecordingSettings(mode="eval", world_size=1, num_samples=30))
    rng = np.random.default_rng(0)
    for t in (1, 2, 3):
        ids = np.arange(30)
        store.write_shard(
            t,
            0,
            {
                "sample_id": ids,
                "loss": rng.random(30) * 3,
                "n_tokens": np.full(30, 8),
                "step": np.full(30, t),
            },
        )
        store.mark_complete(t, t, float(t))
    assert main(["merge", str(tmp_path / "run")]) == 0
    assert "merged 3 snapshots of 30 samples" in capsys.readouterr().out
    wide = tmp_path / "run" / "carto" / "losses.parquet"
    assert main(["merge", str(tmp_path / "run")]) == 2  # refuses to overwrite
    assert main(["score", str(wide), str(tmp_path / "scored"), "--burn-in", "1", "--eps", "1.0"]) == 0

    Dataset.from_dict({"sample_id": np.arange(30)[::-1], "text": ["t"] * 30}).save_to_disk(str(tmp_path / "ds"))
    assert (
        main(
            [
                "merge",
                str(tmp_path / "run"),
                "--dataset",
                str(tmp_path / "ds"),
                "--out",
                str(tmp_path / "merged"),
            ]
        )
        == 0
    )
    merged = load_from_disk(str(tmp_path / "merged"))
    assert merged.column_names == ["sample_id", "text", "carto_loss_1", "carto_loss_2", "carto_loss_3"]
    assert main(["merge", str(tmp_path / "nothing")]) == 2
    assert "no recording" in capsys.readouterr().err


def test_arms_writes_three_labelled_datasets(tmp_path, loss_parquet, capsys):
    scored = tmp_path / "scored"
    assert (
        main(
            ["score", str(loss_parquet), str(scored), "--burn-in", "2", "--eps", "quantile:0.3", "--no-interventions"]
        )
        == 0
    )
    assert main(["arms", str(scored), str(tmp_path / "arms"), "--budget", "0.1", "--alpha", "0"]) == 0
    out = capsys.readouterr().out
    assert "gendatacarto" in out and "pruned weight=10.00%" in out
    budgets = json.loads((tmp_path / "arms" / "budgets.json").read_text())
    assert budgets["random"] == budgets["gendatacarto"] and budgets["gendatacarto"]["num_removed"] == 40
    for name in ("no_intervention", "gendatacarto", "random"):
        arm = load_from_disk(str(tmp_path / "arms" / name))
        assert len(arm) == 400 and "carto_keep" in arm.column_names
    assert main(["arms", str(scored), str(tmp_path / "arms")]) == 2
