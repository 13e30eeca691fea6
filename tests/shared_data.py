"""Where the real corpora the tests read live: one setting, ``HF_CARTO_DATA``.

It defaults to ``../shared/data`` beside the repository (the layout this project's machines have);
``make data`` fetches the same files from the Hugging Face Hub into ``data/`` where the Hub is
reachable, and ``HF_CARTO_DATA=data make test`` then reads them from there.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATA_ENV = "HF_CARTO_DATA"
DATA_DIR = Path(os.environ.get(DATA_ENV) or Path(__file__).resolve().parents[2] / "shared" / "data")
WIKITEXT = DATA_DIR / "wikitext-2-raw"
GPT2_TOKENIZER = DATA_DIR / "gpt2-tokenizer"


def require(path: Path, what: str) -> Path:
    """``path``, or a failure that says where the data was looked for and how to get it."""
    if not path.exists():
        pytest.fail(
            f"{what} is expected at {path} (from {DATA_ENV}={os.environ.get(DATA_ENV, '<unset>')}, default "
            f"../shared/data): set {DATA_ENV} to the folder holding it, or run `make data` and set {DATA_ENV}=data"
        )
    return path
