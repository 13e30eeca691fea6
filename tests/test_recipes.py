"""The recipes run end to end on small settings and write consistent reports."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def load_recipe(name: str):
    spec = importlib.util.spec_from_file_location(name, RECIPES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_lstm_canary_recipe_small(tmp_path):
    recipe = load_recipe("lstm_canary")
    report = recipe.main(
        [
            "--output_dir",
            str(tmp_path),
            "--seeds",
            "0",
            "1",
            "--num_documents",
            "120",
            "--num_canaries",
            "3",
            "--canary_repetitions",
            "4",
            "--epochs",
            "4",
            "--burn_in",
            "2",
            "--hidden_dim",
            "32",
            "--vocab_size",
            "300",
            "--snapshots_per_epoch",
            "2",
        ]
    )
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk["summary"] == report["summary"]
    assert set(report["summary"]) == {"no_intervention", "gendatacarto", "random"}
    for result in report["seeds"]:
        arms = result["arms"]
        assert arms["no_intervention"]["num_pruned"] == 0
        assert arms["gendatacarto"]["num_pruned"] == arms["random"]["num_pruned"] == result["budget_cut"]["num_pruned"]
        assert result["budget_cut"]["num_pruned"] == round(0.05 * result["num_samples"])
        for arm in arms.values():
            assert 0.0 <= arm["extraction"]["success_rate"] <= 1.0 and arm["perplexity"] > 1.0
        assert 0.0 <= result["planted_recovery"]["canary"]["pruned"]["recall"] <= 1.0
    assert report["summary"]["no_intervention"]["perplexity_change_mean"] == 0.0
    assert "| gendatacarto |" in (tmp_path / "report.md").read_text()
    manifest = json.loads((tmp_path / "seed0" / "mapping" / "carto" / "manifest.json").read_text())
    assert len(manifest["snapshots"]) == 8  # 4 epochs x 2 snapshots


def test_lstm_canary_recipe_rejects_a_bad_burn_in(tmp_path):
    recipe = load_recipe("lstm_canary")
    with pytest.raises(SystemExit, match="burn_in must be in"):
        recipe.main(["--output_dir", str(tmp_path), "--epochs", "3", "--burn_in", "3"])
