"""The experiment's presets, read from hf_carto/experiment/presets.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_carto.experiment import PRESET_ABOUT, PRESETS, parse_arguments
from hf_carto.experiment.errors import SettingsError
from hf_carto.experiment.presets import _load

DATA = Path(__file__).parents[1] / "hf_carto" / "experiment" / "presets.json"


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_described_and_parses(name):
    assert len(PRESET_ABOUT[name]) > 20
    model_args, data_args, carto, training = parse_arguments(["--preset", name])
    settings = PRESETS[name]
    assert training.num_train_epochs == settings["num_train_epochs"] and carto.burn_in == settings["burn_in"]
    assert data_args.block_size == settings["block_size"]


def test_a_preset_is_the_base_then_what_it_extends_then_its_own_settings():
    raw = json.loads(DATA.read_text())
    for name, entry in raw.items():
        if name == "cpu-base":
            continue
        parent = raw[entry["extends"]]["settings"] if "extends" in entry else {}
        expected = {**raw["cpu-base"]["settings"], **parent, **entry["settings"]}
        assert PRESETS[name] == expected, name
    assert raw["cpu-leaky"]["extends"] == "cpu-paper"
    # the leaky preset is the paper's without dropout: the data file writes only what changes
    assert PRESETS["cpu-leaky"]["detectors"] != PRESETS["cpu-paper"]["detectors"]
    assert PRESETS["cpu-leaky"]["train_tokenizer_vocab_size"] == PRESETS["cpu-paper"]["train_tokenizer_vocab_size"]


def test_presets_do_not_share_lists_and_a_bad_setting_is_refused(tmp_path, monkeypatch):
    PRESETS["cpu-demo"]["canary_repetitions"].append(999)
    try:
        assert 999 not in PRESETS["cpu-tiny"]["canary_repetitions"]
        assert 999 not in PRESETS["cpu-paper"]["canary_repetitions"]
    finally:
        PRESETS["cpu-demo"]["canary_repetitions"].pop()
    broken = json.loads(DATA.read_text())
    broken["cpu-tiny"]["settings"]["num_train_epoch"] = 2  # a misspelt field
    path = tmp_path / "presets.json"
    path.write_text(json.dumps(broken))
    presets, _ = _load(path)
    monkeypatch.setitem(PRESETS, "cpu-tiny", presets["cpu-tiny"])
    with pytest.raises(SettingsError, match="num_train_epoch"):
        parse_arguments(["--preset", "cpu-tiny"])
