"""Cartography scores on a loss matrix (section 3 of the paper).

Every function here takes plain arrays and numbers and returns arrays; nothing reads files,
datasets or argument namespaces. A loss matrix has shape ``(N, T)``: one row per sample, one
column per snapshot ``t = 1..T`` (column ``t - 1``).

Definitions (Generative Data Cartography, sections 3.1-3.3):

- difficulty ``d_i = mean(L[i, :T_e])`` over the burn-in snapshots;
- a sample is fitted while its loss is below ``eps`` and unfitted while it is above; a forget
  event is a move from fitted to unfitted between two snapshots (``L[i, t] < eps and
  L[i, t + 1] > eps``, strict on both sides), and a loss exactly at ``eps`` keeps the state the
  sample had (:func:`hf_carto.core.kernel.forget_event_counts`);
- memorization ``m_i = (#forget events) / (T - 1)``;
- thresholds ``tau = F^{-1}(alpha)``, the empirical quantile function. With numpy's
  ``"inverted_cdf"`` method this is the smallest observed value whose empirical CDF reaches
  ``alpha``, so at most ``(1 - alpha) * N`` samples lie strictly above it;
- quadrants use ``>`` exactly as in the paper's Table 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hf_carto.core.columns import PLANTED_NAMES, Quadrant
from hf_carto.core.eps import check_eps, check_loss_matrix
from hf_carto.core.kernel import burn_in_difficulty, forget_event_counts, memorization_rate, never_below

__all__ = [
    "QuadrantAssignment",
    "BudgetSelection",
    "TrainingDynamics",
    "check_alpha",
    "check_burn_in",
    "difficulty",
    "forget_events",
    "never_learned",
    "memorization",
    "assign_quadrants",
    "select_top_memorized",
    "planted_vs_quadrant",
    "training_dynamics",
]

#: numpy quantile method that implements the paper's ``F^{-1}(alpha)``.
THRESHOLD_METHOD = "inverted_cdf"


def check_burn_in(burn_in: int, num_snapshots: int) -> int:
    """``burn_in`` as an ``int``, checked to be a valid ``T_e`` for ``num_snapshots`` snapshots.

    Raises:
        ValueError: when it is not an integer (a bool is not), or outside `[1, num_snapshots - 1]`.
    """
    if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)):
        raise ValueError(f"burn_in must be an integer, got {burn_in!r}")
    if not 1 <= burn_in <= num_snapshots - 1:
        raise ValueError(
            f"burn_in must be in [1, T - 1] = [1, {num_snapshots - 1}] for T = {num_snapshots} "
            f"snapshots; got {burn_in}"
        )
    return int(burn_in)


def check_alpha(name: str, value: float) -> float:
    """``value`` as a ``float``, checked to be a threshold percentile in the open interval ``(0, 1)``.

    Raises:
        ValueError: naming the argument ``name`` when it is not a number in `(0, 1)`.
    """
    if not (isinstance(value, (int, float, np.floating)) and 0.0 < float(value) < 1.0):
        raise ValueError(f"{name} must be a fraction in the open interval (0, 1); got {value!r}")
    return float(value)


def difficulty(losses: np.ndarray, burn_in: int) -> np.ndarray:
    """Mean loss over the first ``burn_in`` snapshots, ``d_i = mean(L[i, :T_e])`` (paper, 3.1).

    Args:
        losses (`np.ndarray` of shape `(N, T)`): the loss matrix.
        burn_in (`int`): `T_e`, in `[1, T - 1]`.

    Returns:
        `np.ndarray` of shape `(N,)`, float64.

    Example:
        >>> difficulty(np.array([[3.0, 1.0, 0.5]]), burn_in=2)
        array([2.])
    """
    arr = check_loss_matrix(losses, min_snapshots=2)
    return burn_in_difficulty(arr, check_burn_in(burn_in, arr.shape[1]))


def forget_events(losses: np.ndarray, eps: float) -> np.ndarray:
    """Number of forget events per sample: ``L[t] < eps`` followed by ``L[t + 1] > eps``, a loss
    exactly at ``eps`` keeping the state (:func:`hf_carto.core.kernel.forget_event_counts`).

    Returns:
        `np.ndarray` of shape `(N,)`, int64, each in `[0, T - 1]`.

    Example:
        >>> forget_events(np.array([[0.1, 2.0, 0.1, 2.0], [0.1, 0.1, 0.1, 0.1]]), eps=1.0)
        array([2, 0])
    """
    return forget_event_counts(check_loss_matrix(losses, min_snapshots=2), check_eps(eps))


def never_learned(losses: np.ndarray, eps: float) -> np.ndarray:
    """The rows whose loss is never below ``eps``: never fitted, so never forgotten.

    The paper's ``m_i`` gives them 0, the same as a row fitted once and kept; forgetting-events
    counting (Toneva et al., 2019) ranks never-learned examples as the most forgotten instead.
    This mask tells the two apart; the fit reports how many rows it holds.

    Example:
        >>> never_learned(np.array([[2.0, 1.5], [2.0, 0.5], [1.0, 1.0]]), 1.0).tolist()
        [True, False, True]
    """
    return never_below(check_loss_matrix(losses), check_eps(eps))


def memorization(losses: np.ndarray, eps: float) -> np.ndarray:
    """Fraction of snapshot transitions with a forget event, ``m_i = events / (T - 1)`` (paper, 3.2).

    Returns:
        `np.ndarray` of shape `(N,)`, float64 in `[0, 1]`; it takes at most `T` distinct values,
        so ties are the normal case.
    """
    arr = check_loss_matrix(losses, min_snapshots=2)
    return memorization_rate(forget_event_counts(arr, check_eps(eps)), arr.shape[1])


@dataclass(frozen=True)
class QuadrantAssignment:
    """Quadrant ids and the thresholds that produced them."""

    quadrants: np.ndarray = field(repr=False)
    tau_d: float
    tau_m: float
    alpha_d: float
    alpha_m: float

    def counts(self) -> dict[str, int]:
        """Number of samples per quadrant name, in id order."""
        bins = np.bincount(self.quadrants, minlength=len(Quadrant))
        return {name: int(bins[q]) for q, name in enumerate(Quadrant.names())}


def assign_quadrants(
    difficulty: np.ndarray,
    memorization: np.ndarray,
    alpha_d: float = 0.75,
    alpha_m: float = 0.75,
) -> QuadrantAssignment:
    """Split samples into the four quadrants of Table 1.

    ``tau_d`` and ``tau_m`` are the ``alpha_d`` and ``alpha_m`` empirical quantiles
    (``F^{-1}(alpha)``, numpy method ``"inverted_cdf"``); a sample is "hard" when ``d > tau_d`` and
    "memorized" when ``m > tau_m``. Because ``m`` is discrete, the memorized side is often smaller
    than ``1 - alpha_m`` of the data, and empty when more than ``alpha_m`` of samples share the
    largest value of ``m``.

    Args:
        difficulty (`np.ndarray` of shape `(N,)`): `d_i`.
        memorization (`np.ndarray` of shape `(N,)`): `m_i`.
        alpha_d (`float`, *optional*, defaults to `0.75`): percentile for `tau_d`, in `(0, 1)`.
        alpha_m (`float`, *optional*, defaults to `0.75`): percentile for `tau_m`, in `(0, 1)`.

    Example:
        >>> qa = assign_quadrants(np.array([1.0, 2, 3, 4]), np.array([0.0, 0.5, 0, 0.5]), 0.5, 0.5)
        >>> qa.quadrants.tolist(), qa.tau_d, qa.tau_m
        ([0, 2, 1, 3], 2.0, 0.0)
    """
    d = np.asarray(difficulty, dtype=np.float64)
    m = np.asarray(memorization, dtype=np.float64)
    if d.ndim != 1 or m.ndim != 1 or d.shape != m.shape:
        raise ValueError(f"difficulty and memorization must be 1-D of equal length; got {d.shape} and {m.shape}")
    if d.size == 0:
        raise ValueError("no samples to assign (N = 0)")
    for name, arr in (("difficulty", d), ("memorization", m)):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            raise ValueError(f"{name} has {bad.size} non-finite values; first rows: {bad[:5].tolist()}")
    alpha_d = check_alpha("alpha_d", alpha_d)
    alpha_m = check_alpha("alpha_m", alpha_m)
    tau_d = float(np.percentile(d, 100.0 * alpha_d, method=THRESHOLD_METHOD))
    tau_m = float(np.percentile(m, 100.0 * alpha_m, method=THRESHOLD_METHOD))
    quadrants = (d > tau_d).astype(np.int8)
    quadrants += 2 * (m > tau_m).astype(np.int8)
    return QuadrantAssignment(quadrants, tau_d, tau_m, alpha_d, alpha_m)


@dataclass(frozen=True)
class BudgetSelection:
    """The samples chosen by :func:`select_top_memorized` and how the cut was decided."""

    indices: np.ndarray = field(repr=False)  # selected rows, in selection order
    fraction: float
    n_selected: int
    cut_value: float  # memorization of the last selected sample (nan when nothing is selected)
    n_tied_at_cut: int  # samples whose memorization equals cut_value
    n_tied_selected: int  # of those, how many the tie-break kept

    @property
    def n_tied_dropped(self) -> int:
        """Tied samples left out only because of the tie-break."""
        return self.n_tied_at_cut - self.n_tied_selected

    def mask(self, num_samples: int) -> np.ndarray:
        """Boolean mask of length ``num_samples`` marking the selected rows."""
        out = np.zeros(num_samples, dtype=bool)
        out[self.indices] = True
        return out


def select_top_memorized(
    memorization: np.ndarray,
    fraction: float,
    *,
    difficulty: np.ndarray | None = None,
    sample_ids: np.ndarray | None = None,
) -> BudgetSelection:
    """Pick the top ``fraction`` of samples by memorization, with a deterministic tie-break.

    The budget is ``k = floor(fraction * N + 0.5)`` samples (round half up). Samples are ranked by
    descending memorization; ties are broken by **ascending difficulty** (among equally memorized
    samples the easier one is the more typical hotspot), then by **ascending sample_id** (row
    index when no ids are given). Only the samples tied at the cut are sorted, so selection is
    linear in ``N`` apart from that group.

    Returns:
        :class:`BudgetSelection`, which reports how many tied samples shared the cut value and how
        many of them the tie-break kept.

    Example:
        >>> m, d = np.array([0.5, 0.5, 0.0, 1.0]), np.array([2.0, 1.0, 0.0, 0.0])
        >>> sel = select_top_memorized(m, 0.5, difficulty=d)
        >>> sel.indices.tolist(), sel.n_tied_at_cut, sel.n_tied_selected
        ([3, 1], 2, 1)
    """
    m = np.asarray(memorization, dtype=np.float64)
    if m.ndim != 1 or m.size == 0:
        raise ValueError(f"memorization must be a non-empty 1-D array; got shape {m.shape}")
    if not (0.0 <= float(fraction) <= 1.0):
        raise ValueError(f"fraction must be in [0, 1]; got {fraction!r}")
    n = m.size
    for name, arr in (("difficulty", difficulty), ("sample_ids", sample_ids)):
        if arr is not None and np.asarray(arr).shape != (n,):
            raise ValueError(f"{name} must have shape ({n},); got {np.asarray(arr).shape}")
    k = int(math.floor(float(fraction) * n + 0.5))
    if k == 0:
        return BudgetSelection(np.zeros(0, dtype=np.int64), float(fraction), 0, math.nan, 0, 0)
    # The k-th largest value decides the cut; everything strictly above it is selected outright.
    cut_value = float(np.partition(m, n - k)[n - k])
    above = np.flatnonzero(m > cut_value)
    tied = np.flatnonzero(m == cut_value)
    need = k - above.size
    tie_keys: list[np.ndarray] = [np.asarray(sample_ids)[tied] if sample_ids is not None else tied]
    if difficulty is not None:
        tie_keys.append(np.asarray(difficulty, dtype=np.float64)[tied])
    chosen_tied = tied[np.lexsort(tie_keys)[:need]]  # lexsort: last key is the primary one
    above_keys: list[np.ndarray] = [np.asarray(sample_ids)[above] if sample_ids is not None else above]
    if difficulty is not None:
        above_keys.append(np.asarray(difficulty, dtype=np.float64)[above])
    above_keys.append(-m[above])
    ordered_above = above[np.lexsort(above_keys)]
    indices = np.concatenate([ordered_above, chosen_tied]).astype(np.int64)
    return BudgetSelection(indices, float(fraction), k, cut_value, int(tied.size), int(need))


def planted_vs_quadrant(truth: np.ndarray, quadrants: np.ndarray) -> dict[str, dict[str, int]]:
    """How many samples of each planted kind landed in each quadrant.

    Args:
        truth (`np.ndarray` of shape `(N,)`): planted-kind ids, indices into
            :data:`hf_carto.core.columns.PLANTED_NAMES` (the ``truth`` column).
        quadrants (`np.ndarray` of shape `(N,)`): quadrant ids (the ``carto_quadrant`` column).

    Returns:
        `dict[str, dict[str, int]]`: one row per planted kind that occurs at least once, in
        :data:`~hf_carto.core.columns.PLANTED_NAMES` order, each mapping every lower-case quadrant name
        (in id order) to a count; a kind the data never planted gets no row rather than zeros.

    Example:
        >>> planted_vs_quadrant(np.array([0, 0, 2]), np.array([0, 1, 2]))["canary"]
        {'stable_easy': 0, 'ambiguous_hard': 0, 'hotspot_memorized': 1, 'noisy_outlier': 0}
    """
    t = np.asarray(truth)
    q = np.asarray(quadrants)
    if t.ndim != 1 or t.shape != q.shape:
        raise ValueError(f"truth and quadrants must be 1-D of equal length; got {t.shape} and {q.shape}")
    t, q = t.astype(np.int64), q.astype(np.int64)
    kinds, regions = len(PLANTED_NAMES), len(Quadrant)
    for name, ids, limit in (("truth", t, kinds), ("quadrants", q, regions)):
        bad = np.flatnonzero((ids < 0) | (ids >= limit))
        if bad.size:
            raise ValueError(f"{name} has {bad.size} ids outside [0, {limit - 1}]; first rows: {bad[:5].tolist()}")
    counts = np.bincount(t * regions + q, minlength=kinds * regions).reshape(kinds, regions)
    return {
        kind: {name: int(counts[k, r]) for r, name in enumerate(Quadrant.names())}
        for k, kind in enumerate(PLANTED_NAMES)
        if counts[k].any()
    }


@dataclass(frozen=True)
class TrainingDynamics:
    """Per-sample training-dynamics statistics (dataset cartography and forgetting events).

    All arrays have shape ``(N,)``. ``confidence`` and ``variability`` are dataset cartography's
    (Swayamdipta et al., 2020): the mean and the population standard deviation over snapshots of
    the gold-label probability, ``p = exp(-loss)`` for a language model's per-sample loss.
    ``mean_loss`` and ``loss_std`` are the same two statistics of the loss itself.
    ``first_learned`` is the 1-based snapshot at which the loss first falls strictly below
    ``eps``, or ``-1`` when it never does (``never_learned``).
    """

    mean_loss: np.ndarray = field(repr=False)
    loss_std: np.ndarray = field(repr=False)  # population std over snapshots (ddof=0)
    confidence: np.ndarray = field(repr=False)
    variability: np.ndarray = field(repr=False)  # population std of p over snapshots (ddof=0)
    min: np.ndarray = field(repr=False)
    final: np.ndarray = field(repr=False)
    first_learned: np.ndarray = field(repr=False)
    never_learned: np.ndarray = field(repr=False)
    forget_events: np.ndarray = field(repr=False)
    eps: float

    def as_columns(self, prefix: str = "carto_") -> dict[str, np.ndarray]:
        """The statistics as a ``{column_name: array}`` dict ready for ``Dataset.add_column``."""
        names = (
            "mean_loss",
            "loss_std",
            "confidence",
            "variability",
            "min",
            "final",
            "first_learned",
            "never_learned",
            "forget_events",
        )
        return {prefix + name: getattr(self, name) for name in names}


def training_dynamics(losses: np.ndarray, eps: float) -> TrainingDynamics:
    """Mean and spread of the loss and of ``p = exp(-loss)``, min and final loss, first snapshot
    below ``eps``, never-learned flag and forget-event count for every sample."""
    arr = check_loss_matrix(losses, min_snapshots=2)
    eps = check_eps(eps)
    below = arr.astype(np.float64, copy=False) < np.float64(eps)  # float64 under numpy 1.x too
    ever = below.any(axis=1)
    first = np.where(ever, below.argmax(axis=1) + 1, -1).astype(np.int64)
    p = np.exp(-arr.astype(np.float64))
    return TrainingDynamics(
        mean_loss=arr.mean(axis=1, dtype=np.float64),
        loss_std=arr.std(axis=1, dtype=np.float64),
        confidence=p.mean(axis=1),
        variability=p.std(axis=1),
        min=arr.min(axis=1).astype(np.float64),
        final=arr[:, -1].astype(np.float64),
        first_learned=first,
        never_learned=~ever,
        forget_events=forget_event_counts(arr, eps),
        eps=eps,
    )
