"""Column names and labels are defined once, in `hf_carto.core.columns`; no module imports another's
private names."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

import hf_carto
from hf_carto.core import columns
from hf_carto.core.columns import PLANTED_NAMES, loss_column, loss_columns

PACKAGE_DIR = Path(hf_carto.__file__).resolve().parent


def test_the_generated_corpus_and_packed_blocks_share_one_label_list():
    from hf_carto.data.generated import TRUTH_NAMES, CorpusConfig, generate_corpus
    from hf_carto.data.packing import pack_documents

    assert TRUTH_NAMES == PLANTED_NAMES[: len(TRUTH_NAMES)]  # same ids for the kinds both hold
    corpus = generate_corpus(
        CorpusConfig(num_documents=20, num_duplicate_groups=2, num_canaries=2, num_noise_documents=2, seed=1)
    )
    blocks = pack_documents([[1, 2], [3, 4]], 2, kinds=[0, 4])
    assert corpus.features[columns.TRUTH].names == TRUTH_NAMES
    assert blocks.features[columns.TRUTH].names == PLANTED_NAMES
    assert set(np.asarray(corpus[columns.TRUTH][:]).tolist()) == {0, 1, 2, 3}


def test_loss_column_names_round_trip():
    names = [loss_column(t) for t in (3, 1, 2)] + ["carto_loss_weight", "text"]
    assert loss_columns(names) == ["carto_loss_1", "carto_loss_2", "carto_loss_3"]
    assert columns.LOSS_COLUMN_PATTERN.match(loss_column(12))[1] == "12"
    from hf_carto.score.cartography import quadrant_feature

    assert quadrant_feature().names == ["stable_easy", "ambiguous_hard", "hotspot_memorized", "noisy_outlier"]


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level > 0 or (node.module or "").startswith("hf_carto")):
            found += [f"{path.name}:{node.lineno} {alias.name}" for alias in node.names if alias.name.startswith("_")]
    return found


def test_no_module_imports_another_modules_private_names():
    offenders = [hit for path in sorted(PACKAGE_DIR.rglob("*.py")) for hit in _private_imports(path)]
    assert offenders == []


def test_tiny_gpt2_is_seeded_and_sets_end_of_text():
    from hf_carto.core.models import tiny_gpt2

    one = tiny_gpt2(40, n_layer=1, n_embd=8, n_head=2, n_positions=16, eos_token_id=3, seed=5)
    two = tiny_gpt2(40, n_layer=1, n_embd=8, n_head=2, n_positions=16, eos_token_id=3, seed=5)
    config = one.config
    assert (config.vocab_size, config.n_layer, config.n_embd, config.n_head, config.n_positions) == (40, 1, 8, 2, 16)
    assert config.bos_token_id == config.eos_token_id == 3
    for a, b in zip(one.parameters(), two.parameters(), strict=True):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())
    assert tiny_gpt2(40, n_layer=1, n_embd=8, n_head=2, resid_pdrop=0.0).config.resid_pdrop == 0.0


def test_map_columns_declares_the_new_types_and_replaces_a_column_of_the_same_name():
    from datasets import Dataset, Value

    from hf_carto.core.column_maps import map_columns

    ds = Dataset.from_dict({"x": [1, 2, 3], "y": ["a", "b", "c"]})

    def double(batch):
        return {"x": [2 * v for v in batch["x"]], "z": [v > 1 for v in batch["x"]]}

    out = map_columns(ds, double, {"x": Value("float32"), "z": Value("bool")}, batch_size=2, desc="test")
    assert out.features["x"] == Value("float32") and out.features["z"] == Value("bool")
    assert out["x"] == [2.0, 4.0, 6.0] and out["z"] == [False, True, True] and out["y"] == ["a", "b", "c"]
    # Left to inference, a batch of integer zeros would make an int64 column.
    zeros = map_columns(ds, lambda b: {"w": [0] * len(b["x"])}, {"w": Value("float64")}, batch_size=2, desc="t")
    assert zeros.features["w"] == Value("float64") and zeros["w"] == [0.0, 0.0, 0.0]
