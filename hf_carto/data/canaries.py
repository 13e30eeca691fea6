"""Canaries (Carlini et al., The Secret Sharer): a prefix and a random secret, inserted r times.

A registry keeps, for every canary, its id, prefix, secret, secret format, repetition count and,
once the training data is tokenized and packed, the ``sample_id`` of every block that contains
it. The registry holds the secrets, so it stays a local file (``save_registry`` /
``load_registry``); nothing the toolkit publishes includes it.
"""

from __future__ import annotations

import json
import os
import string
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hf_carto.core.atomic import write_json_atomic
from hf_carto.core.columns import CANARY_ID, IS_CANARY, SAMPLE_ID, read_columns

__all__ = [
    "Canary",
    "SECRET_FORMATS",
    "SECRET_WORDS",
    "PREFIX_TEMPLATES",
    "draw_secret",
    "make_canaries",
    "unused_templates",
    "insert_canaries",
    "locate_canaries",
    "insert_canaries_dataset",
    "mark_canary_blocks",
    "canary_id_column",
    "verify_registry",
    "save_registry",
    "load_registry",
]

SECRET_FORMATS = ("digits", "words", "tokens")
# Canary prompts are "the <attribute> of <holder> <name> is". Every canary gets its own
# (attribute, holder) pair, not only its own name: two canaries that share a template teach the
# model one pattern with two answers, and greedy decoding then often emits the sibling's secret.
_ATTRIBUTES = (
    "secret code", "pin", "password", "account number", "phone number", "door code",
    "locker combination", "badge number", "serial number", "access key", "routing number",
    "license number", "passport number", "alarm code", "safe combination", "member number",
)  # fmt: skip
_HOLDERS = ("account", "server", "user", "patient", "employee", "vault", "device", "client")
PREFIX_TEMPLATES = tuple(f"the {a} of {h} {{name}} is" for h in _HOLDERS for a in _ATTRIBUTES)
#: The vocabulary of ``"words"`` secrets (and of canary names): a secret of ``n`` words is one of
#: ``len(SECRET_WORDS) ** n``, which exact exposure enumerates.
SECRET_WORDS = (
    "apple river stone cloud maple tiger silver ocean violet ember canyon falcon harbor meadow "
    "pepper quartz saddle timber walnut yonder zephyr amber bridge candle desert".split()
)


@dataclass
class Canary:
    """One canary and where it went."""

    canary_id: int
    prefix: str
    secret: str
    secret_format: str
    repetitions: int
    sample_ids: list[int] = field(default_factory=list)

    @property
    def text(self) -> str:
        return f"{self.prefix} {self.secret}"


def draw_secret(rng: np.random.Generator, fmt: str, length: int) -> str:
    """A random secret of ``length`` units in format ``fmt``, each unit drawn uniformly.

    ``"digits"``: ``length`` digits, joined; ``"words"``: ``length`` of :data:`SECRET_WORDS`;
    ``"tokens"``: ``length`` three-letter lower-case strings. Words and tokens are joined by spaces.
    Exposure draws its reference secrets here too, so they come from the canaries' own distribution.

    Example:
        >>> draw_secret(np.random.default_rng(0), "digits", 6).isdigit()
        True
    """
    if fmt == "digits":
        return "".join(str(d) for d in rng.integers(0, 10, size=length))
    if fmt == "words":
        return " ".join(rng.choice(SECRET_WORDS, size=length))
    if fmt == "tokens":
        letters = np.array(list(string.ascii_lowercase))
        return " ".join("".join(rng.choice(letters, size=3)) for _ in range(length))
    raise ValueError(f"unknown secret format {fmt!r}; choose one of {SECRET_FORMATS}")


def make_canaries(
    num_canaries: int,
    *,
    repetitions: Sequence[int] = (1, 4, 16, 64),
    secret_format: str = "digits",
    secret_length: int = 6,
    templates: Sequence[str] = PREFIX_TEMPLATES,
    seed: int = 0,
    first_id: int = 0,
) -> list[Canary]:
    """Canaries with distinct prompts and random secrets: each canary its own template (drawn
    without replacement from ``templates`` in a seeded order) filled with a unique name.

    ``repetitions`` is cycled over the canaries, so several canaries share each count. Canaries
    that are never inserted (a control set) come from a second call with ``first_id`` past the
    first set and another ``seed``; pass ``templates`` minus the ones already used so that no
    control shares a prompt with a trained canary.

    Example:
        >>> canaries = make_canaries(3, repetitions=(2, 8), secret_length=4, seed=0)
        >>> [c.repetitions for c in canaries], len({c.prefix.rsplit(" ", 2)[0] for c in canaries})
        ([2, 8, 2], 3)
    """
    if num_canaries < 1:
        raise ValueError("num_canaries must be >= 1")
    if not repetitions or min(repetitions) < 1:
        raise ValueError(f"repetitions must be counts >= 1; got {list(repetitions)}")
    if num_canaries > len(templates):
        raise ValueError(f"{num_canaries} canaries need as many distinct templates; {len(templates)} were given")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(templates))
    canaries = []
    for i in range(num_canaries):
        canary_id = first_id + i
        name = f"{rng.choice(SECRET_WORDS)}-{canary_id}"
        canaries.append(
            Canary(
                canary_id=canary_id,
                prefix=templates[order[i]].format(name=name),
                secret=draw_secret(rng, secret_format, secret_length),
                secret_format=secret_format,
                repetitions=int(repetitions[i % len(repetitions)]),
            )
        )
    return canaries


def unused_templates(canaries: Sequence[Canary], templates: Sequence[str] = PREFIX_TEMPLATES) -> list[str]:
    """The templates none of ``canaries`` was made from (to draw a control set from)."""
    used = {c.prefix.rsplit(" ", 2)[0] for c in canaries}
    return [t for t in templates if t.format(name="x").rsplit(" ", 2)[0] not in used]


def insert_canaries(texts: Sequence[str], canaries: Sequence[Canary], *, seed: int = 0) -> tuple[list[str], list[int]]:
    """Insert each canary ``repetitions`` times as its own document at random positions.

    Returns the new list of texts and, aligned with it, the canary id of each text (-1 otherwise).
    """
    rng = np.random.default_rng(seed)
    docs = list(texts)
    ids = [-1] * len(docs)
    for canary in canaries:
        for _ in range(canary.repetitions):
            pos = int(rng.integers(0, len(docs) + 1))
            docs.insert(pos, canary.text)
            ids.insert(pos, canary.canary_id)
    return docs, ids


def locate_canaries(
    blocks: Sequence[Sequence[int]], sample_ids: Sequence[int], canaries: Sequence[Canary], tokenizer
) -> list[Canary]:
    """Fill each canary's ``sample_ids`` with the blocks that contain all of its tokens.

    Documents are tokenized one by one before packing, so a canary's tokens in a block are exactly
    ``tokenizer(canary.text)``. A copy split across two blocks is in neither (and cannot be
    extracted from one block either); a canary with no whole copy gets empty ``sample_ids``.
    """
    if len(blocks) != len(sample_ids):
        raise ValueError(f"got {len(blocks)} blocks for {len(sample_ids)} sample_ids")
    encoded = [np.asarray(b, dtype=np.int64).tobytes() for b in blocks]
    for canary in canaries:
        needle = np.asarray(tokenizer(canary.text)["input_ids"], dtype=np.int64).tobytes()
        canary.sample_ids = [
            int(sid) for sid, block in zip(sample_ids, encoded, strict=True) if _aligned_find(block, needle)
        ]
    return list(canaries)


def insert_canaries_dataset(dataset, canaries: Sequence[Canary], *, text_column: str = "text", seed: int = 0):
    """:func:`insert_canaries` on a ``datasets.Dataset`` of documents (other columns are dropped).

    Returns a dataset with ``text_column``, ``carto_canary_id`` (-1 for ordinary documents) and
    ``is_canary``. Do not publish it: the canary texts hold the secrets.
    """
    from datasets import Dataset

    if text_column not in dataset.column_names:
        raise ValueError(f"the dataset has no {text_column!r} column (columns: {dataset.column_names})")
    texts, ids = insert_canaries(dataset[text_column][:], canaries, seed=seed)
    ids = np.asarray(ids, dtype=np.int64)
    return Dataset.from_dict({text_column: texts, CANARY_ID: ids, IS_CANARY: ids >= 0})


def canary_id_column(canaries: Sequence[Canary], sample_ids: np.ndarray) -> np.ndarray:
    """The ``carto_canary_id`` of every block: the lowest id among the canaries whose
    ``sample_ids`` list the block, -1 for a block that holds none.

    Args:
        canaries (`Sequence[Canary]`): canaries with their ``sample_ids`` filled.
        sample_ids (`np.ndarray` of shape `(N,)`): the dataset's ``sample_id`` column.

    Returns:
        `np.ndarray` of shape `(N,)`, int64, aligned with ``sample_ids``. Ids a canary lists but
        ``sample_ids`` lacks are ignored.

    Example:
        >>> a, b = Canary(3, "p", "1", "digits", 1, [11, 12]), Canary(1, "q", "2", "digits", 1, [12])
        >>> canary_id_column([a, b], np.array([10, 11, 12])).tolist()
        [-1, 3, 1]
    """
    sample_ids = np.asarray(sample_ids, dtype=np.int64)
    labels = np.full(sample_ids.shape, -1, dtype=np.int64)
    listed = [(c.canary_id, np.asarray(c.sample_ids, dtype=np.int64)) for c in canaries if len(c.sample_ids)]
    if not listed:
        return labels
    blocks = np.concatenate([ids for _, ids in listed])
    owners = np.concatenate([np.full(ids.size, cid, dtype=np.int64) for cid, ids in listed])
    # Sorted by block, then canary id: the first entry of each block is its lowest canary id.
    order = np.lexsort((owners, blocks))
    blocks, owners = blocks[order], owners[order]
    first = np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]])
    blocks, owners = blocks[first], owners[first]
    pos = np.clip(np.searchsorted(blocks, sample_ids), 0, blocks.size - 1)
    found = blocks[pos] == sample_ids
    labels[found] = owners[pos[found]]
    return labels


def mark_canary_blocks(dataset, canaries: Sequence[Canary], tokenizer):
    """Label packed training blocks: ``carto_canary_id`` (see :func:`canary_id_column`) and
    ``is_canary``; fills every canary's ``sample_ids``. Needs ``input_ids`` and ``sample_id``."""
    missing = [c for c in ("input_ids", SAMPLE_ID) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks columns {missing}; tokenize and add {SAMPLE_ID} first")
    cols = read_columns(dataset, ["input_ids", SAMPLE_ID])
    locate_canaries(list(cols["input_ids"]), cols[SAMPLE_ID].tolist(), canaries, tokenizer)
    labels = canary_id_column(canaries, cols[SAMPLE_ID])
    for name in (CANARY_ID, IS_CANARY):
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
    return dataset.add_column(CANARY_ID, labels).add_column(IS_CANARY, labels >= 0)


def verify_registry(canaries: Sequence[Canary], dataset, tokenizer) -> None:
    """Check that a registry describes this tokenized dataset: every canary is found in exactly
    the blocks the registry lists. Raises ``ValueError`` naming the canaries that differ."""
    import copy

    cols = read_columns(dataset, ["input_ids", SAMPLE_ID])
    fresh = locate_canaries(
        list(cols["input_ids"]), cols[SAMPLE_ID].tolist(), copy.deepcopy(list(canaries)), tokenizer
    )
    wrong = [c.canary_id for c, f in zip(canaries, fresh, strict=True) if sorted(c.sample_ids) != f.sample_ids]
    if wrong:
        raise ValueError(
            f"the registry does not match the dataset for {len(wrong)} of {len(canaries)} canaries "
            f"(canary ids {wrong[:5]}): their blocks differ. Was the data re-tokenized or re-packed?"
        )


def _aligned_find(haystack: bytes, needle: bytes) -> bool:
    start = haystack.find(needle)
    while start != -1:
        if start % 8 == 0:  # int64 boundaries only: no match across two tokens' bytes
            return True
        start = haystack.find(needle, start + 1)
    return False


def save_registry(canaries: Sequence[Canary], path: str | os.PathLike) -> Path:
    """Write the registry (secrets included) as JSON. Keep it out of anything you publish."""

    out = Path(path)
    write_json_atomic({"canaries": [asdict(c) for c in canaries]}, out)
    return out


def load_registry(path: str | os.PathLike) -> list[Canary]:
    data = json.loads(Path(path).read_text())
    try:
        return [Canary(**item) for item in data["canaries"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a canary registry: {err}") from None
