"""Seeds run as separate invocations combine into the report a multi-seed run writes."""

from __future__ import annotations

import json

import pytest

from hf_carto.commands.main import main as cli
from hf_carto.experiment import main
from hf_carto.experiment.combine import _portable, collect, combine, load_seed_report


def tiny(out, *extra):
    return ["--preset", "cpu-tiny", "--output_dir", str(out), "--policy", "paper", *extra]


@pytest.mark.slow
def test_seeds_run_apart_combine_to_the_report_of_one_run_over_both(tmp_path, capsys):
    main(tiny(tmp_path / "s0", "--seeds", "0"))
    main(tiny(tmp_path / "s1", "--seeds", "1"))
    main(tiny(tmp_path / "both", "--seeds", "0", "1"))
    together = json.loads((tmp_path / "both" / "report.json").read_text())

    results = tmp_path / "results"
    assert cli(["combine", str(tmp_path / "s0"), str(tmp_path / "s1" / "report.json"), "--out", str(results)]) == 0
    combined = json.loads((results / "report.json").read_text())
    for key in ("rows", "summary", "comparisons", "conclusion", "extraction_by_copies", "extraction_floor"):
        assert combined[key] == together[key], key
    assert combined["cartography"] == together["cartography"]
    assert combined["settings"]["seeds"] == [0, 1] and "output_dir" not in combined["settings"]
    assert set(combined["seconds_per_seed"]) == {"0", "1"}
    text = (results / "report.md").read_text()
    assert "## Time and memory" in text and " ± " in text
    # Collecting again from the committed per-seed reports gives the same report.
    again = collect(sorted(results.glob("seed_*/report.json")), tmp_path / "again")
    assert again["summary"] == combined["summary"]

    # Reports of another protocol, or one seed twice, are refused, naming files and settings.
    other = tmp_path / "lr"
    main(tiny(other, "--seeds", "2", "--learning_rate", "1e-3"))
    with pytest.raises(ValueError, match=r"is not a seed of the same run as .*learning_rate: 0.003 vs 0.001"):
        combine([load_seed_report(tmp_path / "s0"), load_seed_report(other)])
    with pytest.raises(ValueError, match="seed 0 is in both"):
        combine([load_seed_report(tmp_path / "s0"), load_seed_report(results / "seed_0" / "report.json")])
    with pytest.raises(ValueError, match="collect one seed per run"):
        collect([tmp_path / "both"], tmp_path / "x")
    assert cli(["combine", str(tmp_path / "nothing"), "--out", str(tmp_path / "y")]) == 2
    assert "no report.json" in capsys.readouterr().err


def test_committed_reports_name_inputs_relative_to_the_working_folder(tmp_path):
    report = {
        "settings": {
            "train_file": str(tmp_path / "data" / "train.txt"),
            "train_file_fingerprint": "123:abc",
            "output_dir": str(tmp_path / "out"),
            "seeds": [0],
        },
        "_path": "x",
        "rows": [],
    }
    portable = _portable(report, tmp_path / "repo")
    assert portable["settings"] == {
        "train_file": "../data/train.txt",
        "train_file_fingerprint": "123:abc",
        "seeds": [0],
    }
    assert "_path" not in portable
