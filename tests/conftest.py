"""Shared fixtures: tiny models built from configs, the shared corpora, no network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_gpt2():
    from hf_carto.core.models import tiny_gpt2 as build

    return build(97, n_positions=32, n_embd=16, n_layer=2, n_head=2, seed=0).eval()


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir() -> Path:
    from shared_data import GPT2_TOKENIZER, require

    return require(GPT2_TOKENIZER, "the GPT-2 tokenizer")
