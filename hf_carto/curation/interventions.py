"""Per-quadrant interventions (paper, section 3.4) as columns of a scored dataset.

:func:`apply_interventions` adds ``carto_loss_weight``, ``carto_sampling_weight`` and
``carto_keep`` from the ``carto_quadrant`` column :func:`hf_carto.add_cartography` wrote. Rows are
only labelled, never dropped: removing them is an explicit
``dataset.filter(lambda keep: keep, input_columns="carto_keep")``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import Dataset, Value

from hf_carto.core.column_maps import map_columns
from hf_carto.core.columns import CURATION_COLUMNS, KEEP, LOSS_WEIGHT, QUADRANT, SAMPLING_WEIGHT, read_columns
from hf_carto.score.cartography import DEFAULT_BATCH_SIZE

__all__ = ["apply_interventions", "CURATION_FEATURES"]

#: The types of the curation columns (``CURATION_COLUMNS``), as every labelling path writes them.
CURATION_FEATURES = {LOSS_WEIGHT: Value("float32"), SAMPLING_WEIGHT: Value("float32"), KEEP: Value("bool")}


@dataclass(frozen=True)
class _Interventions:
    """Per-quadrant weights as a picklable batched ``map`` function."""

    loss_weight: tuple[float, float, float, float]
    sampling_weight: tuple[float, float, float, float]
    keep: tuple[bool, bool, bool, bool]

    def __call__(self, quadrant: Any) -> dict[str, np.ndarray]:
        q = np.asarray(quadrant, dtype=np.int64)
        return {
            LOSS_WEIGHT: np.asarray(self.loss_weight, dtype=np.float32)[q],
            SAMPLING_WEIGHT: np.asarray(self.sampling_weight, dtype=np.float32)[q],
            KEEP: np.asarray(self.keep, dtype=bool)[q],
        }


def _check_weight(name: str, value: float, low: float, high: float = math.inf) -> float:
    value = float(value)
    if not (math.isfinite(value) and low <= value <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}]; got {value!r}")
    return value


def apply_interventions(
    dataset: Dataset,
    *,
    gamma: float = 2.0,
    alpha: float = 0.5,
    remove_noisy: bool = True,
    stable_easy_gamma: float = 1.0,
    by_cluster: str | None = None,
    num_proc: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> Dataset:
    """Label every row with the paper's per-quadrant interventions (section 3.4).

    ============================  ================================  ===============  ==========
    quadrant                      carto_loss_weight                 sampling weight  carto_keep
    ============================  ================================  ===============  ==========
    0 stable_easy                 1                                 stable_easy_gamma  True
    1 ambiguous_hard              1                                 gamma            True
    2 hotspot_memorized           alpha (0 removes the row)         1                alpha > 0
    3 noisy_outlier               1, or 0 when removed              1, or 0          not remove_noisy
    ============================  ================================  ===============  ==========

    A removed row gets both weights 0 so the weight totals describe the data actually trained on.

    Args:
        gamma (`float`, *optional*, defaults to `2.0`): up-sampling factor for ambiguous-hard, >= 1.
        alpha (`float`, *optional*, defaults to `0.5`): loss weight of hotspots, in `[0, 1]`.
        remove_noisy (`bool`, *optional*, defaults to `True`): drop noisy outliers.
        stable_easy_gamma (`float`, *optional*, defaults to `1.0`): light up-sampling of
            stable-easy rows, >= 1.
        by_cluster (`str`, *optional*): a cluster-id column (``carto_dup_near_id`` or
            ``carto_dup_exact_id`` from :func:`hf_carto.add_duplicate_columns`) to treat every
            cluster at once: each member takes the strongest treatment any member got (the
            lowest loss weight, the lowest sampling weight, removed when any member is), so a
            memorized text is not left in training through its copies.
    """
    if QUADRANT not in dataset.column_names:
        raise ValueError(f"the dataset has no '{QUADRANT}' column; run add_cartography first")
    if by_cluster is not None and by_cluster not in dataset.column_names:
        raise ValueError(f"the dataset has no cluster column {by_cluster!r}; run hf_carto.add_duplicate_columns first")
    gamma = _check_weight("gamma", gamma, 1.0)
    alpha = _check_weight("alpha", alpha, 0.0, 1.0)
    stable_easy_gamma = _check_weight("stable_easy_gamma", stable_easy_gamma, 1.0)
    hotspot_kept = alpha > 0
    noisy_kept = not remove_noisy
    rule = _Interventions(
        loss_weight=(1.0, 1.0, alpha, 1.0 if noisy_kept else 0.0),
        sampling_weight=(stable_easy_gamma, gamma, 1.0 if hotspot_kept else 0.0, 1.0 if noisy_kept else 0.0),
        keep=(True, True, hotspot_kept, noisy_kept),
    )
    labelled = map_columns(
        dataset,
        rule,
        CURATION_FEATURES,
        batch_size=batch_size,
        input_columns=QUADRANT,
        num_proc=num_proc,
        desc="Applying interventions",
    )
    return labelled if by_cluster is None else _treat_clusters(labelled, by_cluster, batch_size)


def _treat_clusters(dataset: Dataset, column: str, batch_size: int) -> Dataset:
    """Give every member of a cluster the strongest treatment among its members."""
    values = read_columns(dataset, [column, *CURATION_COLUMNS])
    _, group = np.unique(values[column], return_inverse=True)
    count = int(group.max()) + 1
    loss_weight = np.full(count, np.inf, dtype=np.float32)
    sampling_weight = np.full(count, np.inf, dtype=np.float32)
    keep = np.ones(count, dtype=bool)
    np.minimum.at(loss_weight, group, values[LOSS_WEIGHT].astype(np.float32))
    np.minimum.at(sampling_weight, group, values[SAMPLING_WEIGHT].astype(np.float32))
    np.logical_and.at(keep, group, values[KEEP].astype(bool))

    def treat(batch, indices):
        rows = group[indices]
        return {LOSS_WEIGHT: loss_weight[rows], SAMPLING_WEIGHT: sampling_weight[rows], KEEP: keep[rows]}

    return map_columns(
        dataset,
        treat,
        CURATION_FEATURES,
        batch_size=batch_size,
        with_indices=True,
        desc=f"Treating clusters ({column})",
    )
