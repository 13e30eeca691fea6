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

__all__ = [
    "Canary",
    "SECRET_FORMATS",
    "PREFIX_TEMPLATES",
    "make_canaries",
    "unused_templates",
    "insert_canaries",
    "locate_canaries",
    "insert_canaries_dataset",
    "mark_canary_blocks",
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
_WORDS = (
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


def _secret(rng: np.random.Generator, fmt: str, length: int) -> str:
    if fmt == "digits":
        return "".join(str(d) for d in rng.integers(0, 10, size=length))
    if fmt == "words":
        return " ".join(rng.choice(_WORDS, size=length))
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
        name = f"{rng.choice(_WORDS)}-{canary_id}"
        canaries.append(
            Canary(
                canary_id=canary_id,
                prefix=templates[order[i]].format(name=name),
                secret=_secret(rng, secret_format, secret_length),
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
    return Dataset.from_dict({text_column: texts, "carto_canary_id": ids, "is_canary": ids >= 0})


def mark_canary_blocks(dataset, canaries: Sequence[Canary], tokenizer):
    """Label packed training blocks: ``carto_canary_id`` (the first canary a block holds, -1 if
    none) and ``is_canary``; fills every canary's ``sample_ids``. Needs ``input_ids`` and ``sample_id``."""
    from .curation import read_columns

    missing = [c for c in ("input_ids", "sample_id") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset lacks columns {missing}; tokenize and add sample_id first")
    cols = read_columns(dataset, ["input_ids", "sample_id"])
    locate_canaries(list(cols["input_ids"]), cols["sample_id"].tolist(), canaries, tokenizer)
    first = {}
    for canary in canaries:
        for sid in canary.sample_ids:
            first.setdefault(sid, canary.canary_id)
    labels = np.array([first.get(int(s), -1) for s in cols["sample_id"]], dtype=np.int64)
    for name in ("carto_canary_id", "is_canary"):
        if name in dataset.column_names:
            dataset = dataset.remove_columns(name)
    return dataset.add_column("carto_canary_id", labels).add_column("is_canary", labels >= 0)


def verify_registry(canaries: Sequence[Canary], dataset, tokenizer) -> None:
    """Check that a registry describes this tokenized dataset: every canary is found in exactly
    the blocks the registry lists. Raises ``ValueError`` naming the canaries that differ."""
    import copy

    from .curation import read_columns

    cols = read_columns(dataset, ["input_ids", "sample_id"])
    fresh = locate_canaries(
        list(cols["input_ids"]), cols["sample_id"].tolist(), copy.deepcopy(list(canaries)), tokenizer
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
    from .atomic import write_json_atomic

    out = Path(path)
    write_json_atomic({"canaries": [asdict(c) for c in canaries]}, out)
    return out


def load_registry(path: str | os.PathLike) -> list[Canary]:
    data = json.loads(Path(path).read_text())
    try:
        return [Canary(**item) for item in data["canaries"]]
    except (KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a canary registry: {err}") from None
