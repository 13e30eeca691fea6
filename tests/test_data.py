"""The generated corpus: reproducible, and its ground truth says what was planted."""

from __future__ import annotations

import collections

import pytest

from hf_carto.data.generated import TRUTH_NAMES, CorpusConfig, generate_corpus

SMALL = CorpusConfig(
    num_documents=200,
    num_duplicate_groups=5,
    duplicate_repetitions=(2, 3),
    num_canaries=4,
    canary_repetitions=(1, 5),
    num_noise_documents=7,
    seed=3,
)


def test_same_seed_same_corpus_other_seed_other_corpus():
    a, b = generate_corpus(SMALL), generate_corpus(SMALL)
    assert a["text"][:] == b["text"][:]
    c = generate_corpus(CorpusConfig(**{**SMALL.__dict__, "seed": 4}))
    assert a["text"][:] != c["text"][:]


def test_planted_counts_and_repetitions():
    ds = generate_corpus(SMALL)
    rows = ds.to_list()
    kinds = collections.Counter(TRUTH_NAMES[r["truth"]] for r in rows)
    # 5 groups cycling repetitions (2, 3): 2 + 3 + 2 + 3 + 2 = 12 rows; canaries (1, 5, 1, 5) = 12.
    assert kinds == {"ordinary": 195, "duplicate": 12, "canary": 12, "noise": 7}
    texts = collections.Counter(r["text"] for r in rows)
    for r in rows:
        if TRUTH_NAMES[r["truth"]] in ("duplicate", "canary"):
            assert texts[r["text"]] == r["repetitions"]
            assert r["group"] >= 0
    canaries = {r["group"]: r for r in rows if TRUTH_NAMES[r["truth"]] == "canary"}
    prefixes = {r["text"].rsplit(" ", 1)[0] for r in canaries.values()}
    assert len(prefixes) == 4  # every canary has its own prefix
    for r in canaries.values():
        assert r["text"].endswith(" " + r["secret"]) and r["secret"].isdigit() and len(r["secret"]) == 6


def test_ordinary_text_follows_a_zipf_like_law():
    ds = generate_corpus(CorpusConfig(num_documents=800, seed=0))
    words = collections.Counter(w.strip(".").lower() for t in ds["text"][:] for w in t.split())
    freqs = sorted(words.values(), reverse=True)
    # A heavy head and a long tail: the most frequent word is far above the median one.
    assert freqs[0] > 20 * freqs[len(freqs) // 2]
    assert len(words) > 300


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_documents": 0}, "num_documents"),
        ({"min_sentences": 3, "max_sentences": 2}, "min_sentences"),
        ({"canary_repetitions": ()}, "canary_repetitions"),
        ({"num_duplicate_groups": 10, "num_documents": 5}, "num_duplicate_groups"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CorpusConfig(**kwargs)
