"""Every column name and label the toolkit reads or writes, defined once.

A recorded, scored and labelled dataset carries:

- ``sample_id``: the stable id the recorder keys its losses by (fixed before any shuffling);
- ``carto_loss_1 .. carto_loss_T``: one loss per snapshot, written by the merge;
- ``carto_difficulty``, ``carto_memorization``, ``carto_quadrant``: the scores and their quadrant;
- ``carto_loss_weight``, ``carto_sampling_weight``, ``carto_keep``: the interventions;
- ``carto_score_<detector>``: a hotspot detector's score, higher = curate first (see
  :mod:`hf_carto.score.detectors`);
- ``carto_dup_exact_id``, ``carto_dup_exact_size``, ``carto_dup_near_id``, ``carto_dup_near_size``:
  the exact- and near-duplicate cluster of the row (see :mod:`hf_carto.score.duplicates`);
- ``carto_leak_k``, ``carto_leak_extractable``, ``carto_leak_matched_tokens``, ``carto_leak_loss``,
  ``carto_leak_min_k_plus_plus``: the row's own leakage evidence under one model (see
  :mod:`hf_carto.measure.leakage_columns`);
- ``truth``, ``is_canary``, ``carto_canary_id``: what was planted, on data that was built with
  planted material. They hold the ground truth (and point at the secrets), so publishing withholds
  them.

This module imports nothing heavy: the command line and ``import hf_carto`` stay fast.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    from datasets import Dataset

__all__ = [
    "Quadrant",
    "SAMPLE_ID",
    "LOSS_COLUMN_PREFIX",
    "LOSS_COLUMN_PATTERN",
    "DIFFICULTY",
    "MEMORIZATION",
    "QUADRANT",
    "LOSS_WEIGHT",
    "SAMPLING_WEIGHT",
    "KEEP",
    "MAP_COLUMNS",
    "CURATION_COLUMNS",
    "CANARY_ID",
    "IS_CANARY",
    "TRUTH",
    "DUP_EXACT_ID",
    "DUP_EXACT_SIZE",
    "DUP_NEAR_ID",
    "DUP_NEAR_SIZE",
    "DUP_COLUMNS",
    "LEAK_K",
    "LEAK_EXTRACTABLE",
    "LEAK_MATCHED",
    "LEAK_LOSS",
    "LEAK_MIN_K_PLUS_PLUS",
    "LEAK_COLUMNS",
    "PLANTED_NAMES",
    "SCORE_COLUMN_PREFIX",
    "SCORE_COLUMN_PATTERN",
    "loss_column",
    "loss_columns",
    "score_column",
    "score_columns",
    "non_canonical_loss_columns",
    "read_columns",
    "iter_columns",
]

SAMPLE_ID = "sample_id"
LOSS_COLUMN_PREFIX = "carto_loss_"
#: A loss column's canonical name; group 1 is its snapshot number: ASCII digits, no sign, no leading
#: zero, so that one snapshot has exactly one name (``carto_loss_01`` would otherwise also be 1).
LOSS_COLUMN_PATTERN = re.compile(rf"^{re.escape(LOSS_COLUMN_PREFIX)}([1-9][0-9]*)$")
# Names that look like a snapshot's column without being one (carto_loss_07, carto_loss_0,
# carto_loss_+1, carto_loss_ 2, other scripts' digits): int() would read a number out of them.
# Names such as carto_loss_weight do not start with a digit and are not loss columns at all.
_NUMBERED = re.compile(rf"^{re.escape(LOSS_COLUMN_PREFIX)}[\s+-]*\d")
SCORE_COLUMN_PREFIX = "carto_score_"
#: A detector score column's name; group 1 is the detector's name (lower-case letters, digits, ``_``).
SCORE_COLUMN_PATTERN = re.compile(rf"^{re.escape(SCORE_COLUMN_PREFIX)}([a-z][a-z0-9_]*)$")
DIFFICULTY = "carto_difficulty"
MEMORIZATION = "carto_memorization"
QUADRANT = "carto_quadrant"
LOSS_WEIGHT = "carto_loss_weight"
SAMPLING_WEIGHT = "carto_sampling_weight"
KEEP = "carto_keep"
#: The data map a scoring pass adds: the two axes and the quadrant label.
MAP_COLUMNS = (DIFFICULTY, MEMORIZATION, QUADRANT)
#: What a curation writes per sample: loss weight, sampling weight, kept or pruned.
CURATION_COLUMNS = (LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP)
CANARY_ID = "carto_canary_id"
IS_CANARY = "is_canary"
TRUTH = "truth"
#: Duplicate clusters (:mod:`hf_carto.score.duplicates`): a cluster's id is the smallest ``sample_id`` in
#: it; its size counts its rows (1 = unique). Exact: identical content; near: MinHash Jaccard.
DUP_EXACT_ID = "carto_dup_exact_id"
DUP_EXACT_SIZE = "carto_dup_exact_size"
DUP_NEAR_ID = "carto_dup_near_id"
DUP_NEAR_SIZE = "carto_dup_near_size"
DUP_COLUMNS = (DUP_EXACT_ID, DUP_EXACT_SIZE, DUP_NEAR_ID, DUP_NEAR_SIZE)
#: Per-row leakage evidence under one model (:mod:`hf_carto.measure.leakage_columns`): ``k`` (0 = the row
#: was too short to test), whether the first ``k`` tokens reproduce the next ``k`` under greedy
#: decoding, how many of them do (from the first), the row's mean token loss and its min-k%++.
LEAK_K = "carto_leak_k"
LEAK_EXTRACTABLE = "carto_leak_extractable"
LEAK_MATCHED = "carto_leak_matched_tokens"
LEAK_LOSS = "carto_leak_loss"
LEAK_MIN_K_PLUS_PLUS = "carto_leak_min_k_plus_plus"
LEAK_COLUMNS = (LEAK_K, LEAK_EXTRACTABLE, LEAK_MATCHED, LEAK_LOSS, LEAK_MIN_K_PLUS_PLUS)

#: Kinds of planted material, in ``truth`` id order. The generated corpus plants the first four;
#: contamination (held-out text inserted into the training data) exists only in packed blocks.
#: New kinds go at the end: the ids of the existing ones are stored in datasets and reports.
PLANTED_NAMES = ["ordinary", "duplicate", "canary", "noise", "contaminated"]


def loss_column(snapshot: int) -> str:
    """The name of snapshot ``snapshot``'s loss column (snapshots count from 1).

    Example:
        >>> loss_column(3)
        'carto_loss_3'
    """
    return f"{LOSS_COLUMN_PREFIX}{snapshot}"


def score_column(detector: str) -> str:
    """The name of a detector's score column.

    Example:
        >>> score_column("final_loss")
        'carto_score_final_loss'
    """
    name = f"{SCORE_COLUMN_PREFIX}{detector}"
    if not SCORE_COLUMN_PATTERN.match(name):
        raise ValueError(
            f"detector name {detector!r} must be lower-case letters, digits and '_', starting with a letter"
        )
    return name


def score_columns(column_names: Iterable[str]) -> dict[str, str]:
    """``{detector: column}`` for every ``carto_score_<detector>`` column, in the given order.

    Example:
        >>> score_columns(["text", "carto_score_variability", "carto_loss_1"])
        {'variability': 'carto_score_variability'}
    """
    return {m[1]: name for name in column_names if (m := SCORE_COLUMN_PATTERN.match(name))}


def non_canonical_loss_columns(column_names: Iterable[str]) -> list[str]:
    """The names that look like a snapshot's loss column but are not its canonical name.

    Example:
        >>> non_canonical_loss_columns(["carto_loss_1", "carto_loss_07", "carto_loss_0", "carto_loss_weight"])
        ['carto_loss_07', 'carto_loss_0']
    """
    return [name for name in column_names if _NUMBERED.match(name) and not LOSS_COLUMN_PATTERN.match(name)]


def _refuse_non_canonical(column_names: list[str]) -> None:
    bad = non_canonical_loss_columns(column_names)
    if bad:
        raise ValueError(
            f"columns {bad} look like loss columns but are not named {LOSS_COLUMN_PREFIX}<t> with t = 1, 2, ... "
            "(no leading zeros, signs or spaces). Snapshot numbers count from 1 and each has one name, so these "
            "would be misread or collide with another column; rename or remove them"
        )


def loss_columns(column_names: Iterable[str]) -> list[str]:
    """The ``carto_loss_{t}`` columns in snapshot order, checked to be exactly ``1..T``.

    Raises:
        ValueError: when there are none, when some snapshot between 1 and the largest is missing
            (the message lists which), or when a column looks like a loss column without its
            canonical name (``carto_loss_07``, ``carto_loss_0``; the message names it).

    Example:
        >>> loss_columns(["text", "carto_loss_2", "carto_loss_1"])
        ['carto_loss_1', 'carto_loss_2']
    """
    column_names = list(column_names)
    _refuse_non_canonical(column_names)
    found = {int(m[1]): name for name in column_names if (m := LOSS_COLUMN_PATTERN.match(name))}
    if not found:
        raise ValueError(
            f"no '{LOSS_COLUMN_PREFIX}{{t}}' columns found (columns are {column_names}); "
            f"record losses first, or name one column per snapshot {loss_column(1)} .. {LOSS_COLUMN_PREFIX}T"
        )
    expected = set(range(1, max(found) + 1))
    if set(found) != expected:
        missing = sorted(expected - set(found))
        raise ValueError(
            f"loss columns are not contiguous {loss_column(1)}..{loss_column(max(found))}: missing snapshots {missing}"
        )
    return [found[t] for t in sorted(found)]


def read_columns(dataset: Dataset, names: list[str], start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
    """Rows ``start:stop`` of the named columns as numpy arrays in their stored dtypes.

    Goes through Arrow: the ``"numpy"`` format of ``datasets`` may cast floats to float32, and
    indexing a formatted dataset by column name first yields a lazy ``Column`` converted row by row.
    """
    return _arrays(dataset.select_columns(names).with_format("arrow")[start:stop], names)


def iter_columns(dataset: Dataset, names: list[str], batch_size: int):
    """``(start_row, {name: array})`` for every ``batch_size`` rows, read as :func:`read_columns`
    reads them, through one Arrow view: a new ``Dataset`` per batch would cost more than the
    reading once there are 10^8 rows."""
    view = dataset.select_columns(names).with_format("arrow")
    for start in range(0, len(dataset), batch_size):
        yield start, _arrays(view[start : start + batch_size], names)


def _arrays(table, names: list[str]) -> dict[str, np.ndarray]:
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in names}


class Quadrant(enum.IntEnum):
    """The four regions of the difficulty x memorization plane (paper, Table 1)."""

    STABLE_EASY = 0  # d <= tau_d, m <= tau_m
    AMBIGUOUS_HARD = 1  # d > tau_d, m <= tau_m
    HOTSPOT_MEMORIZED = 2  # d <= tau_d, m > tau_m
    NOISY_OUTLIER = 3  # d > tau_d, m > tau_m

    @classmethod
    def names(cls) -> list[str]:
        """Lower-case names in id order, as used by the ``carto_quadrant`` ``ClassLabel``."""
        return [q.name.lower() for q in cls]
