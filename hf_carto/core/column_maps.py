"""Adding typed columns to a ``datasets.Dataset`` with one batched ``map``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from datasets import Dataset, Features

__all__ = ["features_with_columns", "map_columns"]


def features_with_columns(dataset: Dataset, new: dict[str, Any]) -> Features:
    """``dataset``'s features with the ``new`` ones added, replacing any of the same name."""
    features = Features({k: v for k, v in dataset.features.items() if k not in new})
    features.update(new)
    return features


def map_columns(
    dataset: Dataset, function: Callable, new: dict[str, Any], *, batch_size: int, desc: str, **map_options
) -> Dataset:
    """``dataset`` with the columns ``function`` returns for each batch, typed as ``new`` says.

    The types are declared, not inferred from the first batch (where integer zeros would make an
    integer column); ``map_options`` go to ``Dataset.map`` (``input_columns``, ``with_indices``,
    ``num_proc``, ...).
    """
    features = features_with_columns(dataset, new)
    return dataset.map(function, batched=True, batch_size=batch_size, features=features, desc=desc, **map_options)
