"""Shared fixtures: tiny models built from configs, the shared corpora, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_gpt2():
    from hf_carto.models import tiny_gpt2 as build

    return build(97, n_positions=32, n_embd=16, n_layer=2, n_head=2, seed=0).eval()


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    path = SHARED / "data" / "gpt2-tokenizer"
    if not path.exists():
        pytest.fail(f"the shared GPT-2 tokenizer is expected at {path}")
    return path
