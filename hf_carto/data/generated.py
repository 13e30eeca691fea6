"""The embedded default corpus: generated text with planted ground truth.

Nothing is downloaded. :func:`generate_corpus` writes four kinds of documents, each labelled in the
``truth`` column, so that a cartography run can be checked against what was planted:

- ``ordinary``: sentences from a small grammar (determiner, adjective, noun, verb, preposition)
  over pseudo-words whose frequencies follow a Zipf law, like natural text;
- ``duplicate``: ordinary documents copied exactly ``r`` times;
- ``canary``: ``"<prefix> <secret>"`` with a distinct prefix per canary and a random digit secret,
  repeated ``r`` times (the secret-sharer setting);
- ``noise``: random characters, which no model can fit.

The same seed gives the same corpus on every machine (numpy's PCG64 generator).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from hf_carto.core.columns import PLANTED_NAMES, TRUTH

__all__ = ["TRUTH_NAMES", "CorpusConfig", "generate_corpus", "hold_out"]

#: The kinds this generator plants and the names of its ``truth`` labels: the leading part of
#: :data:`hf_carto.core.columns.PLANTED_NAMES`, so an id means the same kind in a generated corpus and
#: in packed blocks.
TRUTH_NAMES = PLANTED_NAMES[:4]

_DETERMINERS = ["the", "a", "this", "every", "some", "that"]
_PREPOSITIONS = ["of", "in", "on", "with", "near", "under", "for"]
_ONSETS = [
    "b",
    "c",
    "d",
    "f",
    "g",
    "h",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "st",
    "tr",
    "pl",
]
_NUCLEI = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "", "n", "r", "s", "l", "m"]
_SUFFIX = {"noun": "", "verb": "s", "adjective": "ic", "adverb": "ly"}
# Share of the content vocabulary given to each part of speech.
_POS_SHARE = {"noun": 0.45, "verb": 0.25, "adjective": 0.2, "adverb": 0.1}


@dataclass(frozen=True)
class CorpusConfig:
    """Sizes and seed of the generated corpus. Defaults make about 2.4k documents in a second."""

    num_documents: int = 2000  # ordinary documents, before any duplicate or canary is added
    vocab_size: int = 1500  # content words shared by nouns, verbs, adjectives and adverbs
    zipf_exponent: float = 1.1  # word frequency ~ 1 / rank**s within each part of speech
    min_sentences: int = 2
    max_sentences: int = 5
    num_duplicate_groups: int = 16  # distinct documents that are duplicated
    duplicate_repetitions: tuple[int, ...] = (2, 4, 8, 16)  # cycled over the groups
    num_canaries: int = 12
    canary_repetitions: tuple[int, ...] = (1, 2, 4, 8, 16, 32)  # cycled over the canaries
    secret_digits: int = 6
    num_noise_documents: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if self.num_documents < 1 or self.vocab_size < 8:
            raise ValueError("num_documents must be >= 1 and vocab_size >= 8")
        if not 1 <= self.min_sentences <= self.max_sentences:
            raise ValueError("need 1 <= min_sentences <= max_sentences")
        if self.num_duplicate_groups > self.num_documents:
            raise ValueError("num_duplicate_groups cannot exceed num_documents")
        for name in ("duplicate_repetitions", "canary_repetitions"):
            reps = getattr(self, name)
            if not reps or min(reps) < 1:
                raise ValueError(f"{name} must be a non-empty list of counts >= 1; got {reps}")


def _pseudo_words(rng: np.random.Generator, count: int) -> list[str]:
    words: set[str] = set()
    while len(words) < count:
        syllables = rng.integers(1, 4)
        words.add("".join(rng.choice(_ONSETS) + rng.choice(_NUCLEI) + rng.choice(_CODAS) for _ in range(syllables)))
    return sorted(words)  # sorted, then shuffled below: independent of set iteration order


class _Grammar:
    def __init__(self, rng: np.random.Generator, vocab_size: int, exponent: float) -> None:
        self.rng = rng
        stems = _pseudo_words(rng, vocab_size)
        rng.shuffle(stems)
        self.words: dict[str, list[str]] = {}
        self.probs: dict[str, np.ndarray] = {}
        start = 0
        for pos, share in _POS_SHARE.items():
            size = max(2, int(share * vocab_size))
            chosen = stems[start : start + size]
            start += size
            self.words[pos] = [w + _SUFFIX[pos] for w in chosen]
            weights = 1.0 / np.arange(1, len(chosen) + 1) ** exponent
            self.probs[pos] = weights / weights.sum()

    def _word(self, pos: str) -> str:
        return self.words[pos][self.rng.choice(len(self.words[pos]), p=self.probs[pos])]

    def _noun_phrase(self) -> str:
        parts = [str(self.rng.choice(_DETERMINERS))]
        if self.rng.random() < 0.5:
            parts.append(self._word("adjective"))
        parts.append(self._word("noun"))
        return " ".join(parts)

    def sentence(self) -> str:
        parts = [self._noun_phrase()]
        if self.rng.random() < 0.2:
            parts.append(self._word("adverb"))
        parts += [self._word("verb"), self._noun_phrase()]
        if self.rng.random() < 0.4:
            parts += [str(self.rng.choice(_PREPOSITIONS)), self._noun_phrase()]
        text = " ".join(parts)
        return text[0].upper() + text[1:] + "."

    def document(self, low: int, high: int) -> str:
        return " ".join(self.sentence() for _ in range(int(self.rng.integers(low, high + 1))))


def _noise(rng: np.random.Generator, length: int) -> str:
    alphabet = np.array(list(string.ascii_letters + string.digits + string.punctuation + "     "))
    return "".join(rng.choice(alphabet, size=length)).strip() or "#"


def generate_corpus(config: CorpusConfig | None = None) -> Dataset:
    """Generate the default corpus with its ground truth.

    Returns:
        `datasets.Dataset` with columns `text`, `truth` (`ClassLabel`: ordinary, duplicate, canary,
        noise), `group` (duplicate group or canary index, `-1` otherwise), `repetitions` (copies of
        this exact text in the corpus) and `secret` (the canary's secret, `""` otherwise). Rows are
        shuffled so that copies are spread through the corpus.

    Example:
        >>> ds = generate_corpus(CorpusConfig(num_documents=20, num_duplicate_groups=2, num_canaries=2,
        ...                                   num_noise_documents=2, seed=1))
        >>> ds.features["truth"].names
        ['ordinary', 'duplicate', 'canary', 'noise']
    """
    config = config or CorpusConfig()
    rng = np.random.default_rng(config.seed)
    grammar = _Grammar(rng, config.vocab_size, config.zipf_exponent)
    rows: list[tuple[str, int, int, int, str]] = []

    originals = [grammar.document(config.min_sentences, config.max_sentences) for _ in range(config.num_documents)]
    duplicated = set(rng.choice(config.num_documents, size=config.num_duplicate_groups, replace=False).tolist())
    group_of = {doc: g for g, doc in enumerate(sorted(duplicated))}
    for i, text in enumerate(originals):
        if i in duplicated:
            g = group_of[i]
            reps = config.duplicate_repetitions[g % len(config.duplicate_repetitions)]
            rows += [(text, 1, g, reps, "")] * reps
        else:
            rows.append((text, 0, -1, 1, ""))

    account_names = _pseudo_words(rng, config.num_canaries)
    for c in range(config.num_canaries):
        secret = "".join(str(x) for x in rng.integers(0, 10, size=config.secret_digits))
        text = f"the secret code of account {account_names[c]} {c} is {secret}"
        reps = config.canary_repetitions[c % len(config.canary_repetitions)]
        rows += [(text, 2, c, reps, secret)] * reps

    lengths = [len(t) for t in originals]
    for _ in range(config.num_noise_documents):
        rows.append((_noise(rng, int(rng.choice(lengths))), 3, -1, 1, ""))

    order = rng.permutation(len(rows))
    texts, truth, group, reps, secrets = zip(*(rows[i] for i in order), strict=True)
    features = Features(
        {
            "text": Value("string"),
            TRUTH: ClassLabel(names=TRUTH_NAMES),
            "group": Value("int32"),
            "repetitions": Value("int32"),
            "secret": Value("string"),
        }
    )
    return Dataset.from_dict(
        {
            "text": list(texts),
            TRUTH: list(truth),
            "group": list(group),
            "repetitions": list(reps),
            "secret": list(secrets),
        },
        features=features,
    )


def hold_out(corpus: Dataset, num_documents: int, *, seed: int = 0) -> tuple[Dataset, Dataset]:
    """Split ``num_documents`` random ordinary documents off a generated corpus.

    Held-out text must come from the same corpus: another seed draws other pseudo-words, and
    perplexity or membership tests on it would measure a different language. Both parts keep the
    corpus order.

    Example:
        >>> ds = generate_corpus(CorpusConfig(num_documents=30, num_duplicate_groups=2, num_canaries=1,
        ...                                   num_noise_documents=2, seed=1))
        >>> train, heldout = hold_out(ds, 10, seed=0)
        >>> len(train) + len(heldout) == len(ds), set(heldout["truth"][:])
        (True, {0})
    """
    truth = np.asarray(corpus[TRUTH][:])
    ordinary = np.flatnonzero(truth == PLANTED_NAMES.index("ordinary"))
    if num_documents > ordinary.size:
        raise ValueError(f"cannot hold out {num_documents} documents: the corpus has {ordinary.size} ordinary ones")
    chosen = np.random.default_rng(seed).choice(ordinary, size=num_documents, replace=False)
    return corpus.select(np.setdiff1d(np.arange(len(corpus)), chosen)), corpus.select(np.sort(chosen))
