"""The data location is one setting, and `make data` writes the layout the tests read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from datasets import Dataset

REPO = Path(__file__).resolve().parents[1]


def test_the_data_location_is_read_from_hf_carto_data(tmp_path):
    code = "import shared_data; print(shared_data.WIKITEXT, shared_data.GPT2_TOKENIZER)"
    env = {**os.environ, "HF_CARTO_DATA": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO / "tests", env=env, capture_output=True, text=True)
    assert out.stdout.split() == [str(tmp_path / "wikitext-2-raw"), str(tmp_path / "gpt2-tokenizer")], out.stderr


def test_fetched_wikitext_rows_become_the_raw_files_lines(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        from fetch_data import write_raw_lines
    finally:
        sys.path.pop(0)
    rows = Dataset.from_dict({"text": ["", " = Title = \n", "", " A line .\n", "no newline"]})
    path = tmp_path / "wikitext-2-raw" / "wiki.valid.raw"
    assert write_raw_lines(rows, path) == 5
    assert path.read_text().splitlines() == ["", " = Title = ", "", " A line .", "no newline"]
