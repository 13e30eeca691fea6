"""Hotspot detectors: per-sample scores that say which samples to curate first.

Every detector is a pure, vectorised function of the ``(N, T)`` loss matrix (one row per sample,
one column per snapshot, as in :mod:`hf_carto.score.scores`) and, where it needs them, the burn-in
``T_e``, the forget threshold ``eps`` or a reference model's losses. It returns an ``(N,)`` float64
score where **higher means curate first**, so that every detector is read the same way: the top
``k`` by score are the ``k`` samples a budget of ``k`` prunes or down-weights.

:data:`DETECTORS` maps each name to its :class:`Detector`; :func:`detector_scores` calls one by
name with only the settings it needs; :func:`add_detector_scores` writes them as
``carto_score_<name>`` columns; :func:`top_budget` cuts a budget off a score with a deterministic
tie-break.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_carto.core.column_maps import map_columns
from hf_carto.core.columns import loss_columns, read_columns, score_column
from hf_carto.core.eps import check_loss_matrix
from hf_carto.core.kernel import burn_in_difficulty, forget_event_counts
from hf_carto.score.scores import BudgetSelection, check_burn_in, select_top_memorized

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = [
    "Detector",
    "DETECTORS",
    "detector_names",
    "detector_scores",
    "add_detector_scores",
    "top_budget",
    "decided_by_tie_break",
    "memorization_score",
    "soft_forgetting",
    "final_loss",
    "min_loss",
    "mean_loss",
    "loss_drop",
    "loss_std",
    "confidence",
    "variability",
    "reference_ratio",
    "COMBINED_COMPONENTS",
    "average_ranks",
    "combined_rank",
    "random_score",
]

#: Temperature (in nats) of :func:`soft_forgetting`'s sigmoids when none is given.
SOFT_FORGETTING_TEMPERATURE = 0.1


def _checked_eps(eps: float | None, name: str) -> float:
    if eps is None or isinstance(eps, bool) or not math.isfinite(float(eps)):
        raise ValueError(f"detector {name!r} needs eps, a finite number (the resolved forget threshold); got {eps!r}")
    return float(eps)


def memorization_score(losses: np.ndarray, *, eps: float, burn_in: int) -> np.ndarray:
    """The paper's memorization ``m_i`` with its difficulty tie-break folded into one ordering.

    Source: Generative Data Cartography, section 3.2 (forget events, ``m_i = events / (T - 1)``)
    and :func:`hf_carto.select_top_memorized` (ties in ``m`` broken by ascending difficulty
    ``d_i = mean(L[i, :T_e])``: among equally memorized samples the easier one is the more typical
    hotspot).

    The score is ``events_i + g(d_i)`` with ``g(d) = 1/2 - arctan(d) / pi``, strictly decreasing
    and inside ``(0, 1)``: its integer part is the number of forget events (``m_i * (T - 1)``), its
    fractional part orders equally memorized samples from easiest to hardest. Sorting by it is
    sorting by ``(-m, d)``; samples equal in both stay tied. (Difficulties closer than about
    ``1e-12 * (1 + d^2)`` would also tie; recorded float32 losses are never that close.)

    Returns:
        `np.ndarray` of shape `(N,)`, float64.
    """
    arr = check_loss_matrix(losses, min_snapshots=2)
    burn_in = check_burn_in(burn_in, arr.shape[1])
    events = forget_event_counts(arr, _checked_eps(eps, "memorization")).astype(np.float64)
    difficulty = burn_in_difficulty(arr, burn_in)
    return events + (0.5 - np.arctan(difficulty) / np.pi)


def soft_forgetting(losses: np.ndarray, *, eps: float, temperature: float = SOFT_FORGETTING_TEMPERATURE) -> np.ndarray:
    """A continuous count of forget events that does not tie: the log of a soft forget-event count.

    Source: a smooth relaxation of the paper's forget events (section 3.2), made here. Each
    transition ``t -> t + 1`` counts ``sigmoid((eps - L[t]) / tau) * sigmoid((L[t + 1] - eps) / tau)``
    instead of ``[L[t] < eps and L[t + 1] > eps]``; the score is the log of the sum, computed in
    log space so that no term underflows to zero. It is continuous in every loss: samples that
    never cross ``eps``, or cross it equally often, are still ordered by how close they came to
    (another) crossing, so recorded real-valued losses do not tie; equal scores need the same
    multiset of transitions, or differences below float64 resolution (a sample with a clear event
    absorbs terms smaller than about ``1e-16`` of it). As ``tau -> 0`` the soft count tends to the
    event count.

    Args:
        temperature (`float`, *optional*, defaults to `0.1`): ``tau``, in nats (loss units).

    Returns:
        `np.ndarray` of shape `(N,)`, float64 (a log count: negative, 0 for one clear event).
    """
    arr = check_loss_matrix(losses, min_snapshots=2).astype(np.float64, copy=False)
    eps = _checked_eps(eps, "soft_forgetting")
    tau = float(temperature)
    if not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"soft_forgetting's temperature must be a positive number; got {temperature!r}")
    # log sigmoid(x) = -log(1 + exp(-x)), stable for every x.
    fitted = -np.logaddexp(0.0, -(eps - arr[:, :-1]) / tau)
    forgotten = -np.logaddexp(0.0, -(arr[:, 1:] - eps) / tau)
    return np.logaddexp.reduce(fitted + forgotten, axis=1)


def final_loss(losses: np.ndarray) -> np.ndarray:
    """Minus the last snapshot's loss: the best-fitted samples first.

    Source: the loss membership-inference attack (Yeom et al., 2018) and extraction rankings by
    perplexity (Carlini et al., 2021): a sample the model fits unusually well is the likeliest to
    leak.
    """
    arr = check_loss_matrix(losses)
    return -arr[:, -1].astype(np.float64)


def min_loss(losses: np.ndarray) -> np.ndarray:
    """Minus the lowest loss over all snapshots: samples that were fitted best at any time first.

    Source: the same loss signal as :func:`final_loss` (Yeom et al., 2018), taken at its best
    snapshot so that a sample fitted and later forgotten still counts.
    """
    arr = check_loss_matrix(losses)
    return -arr.min(axis=1).astype(np.float64)


def loss_drop(losses: np.ndarray) -> np.ndarray:
    """First snapshot's loss minus the last one's: samples the training lowered most first.

    Source: the loss-difference signal of reference-based membership inference (Carlini et al.,
    2021, comparison with an earlier model), with the first snapshot as the earlier model.
    """
    arr = check_loss_matrix(losses).astype(np.float64, copy=False)
    return arr[:, 0] - arr[:, -1]


def mean_loss(losses: np.ndarray) -> np.ndarray:
    """Minus the mean loss over the snapshots: the samples fitted best on average first.

    Source: the loss membership-inference signal (Yeom et al., 2018) averaged over training, the
    loss-space counterpart of dataset cartography's confidence (:func:`confidence`); its rank
    order is close to confidence's but not the same (a mean of ``-log p`` is not ``-log`` of a
    mean of ``p``).
    """
    arr = check_loss_matrix(losses)
    return -arr.mean(axis=1, dtype=np.float64)


def loss_std(losses: np.ndarray) -> np.ndarray:
    """Standard deviation of a sample's loss over the snapshots (population, ``ddof = 0``): the
    samples whose loss moved most first.

    Source: the loss-space counterpart of dataset cartography's variability (:func:`variability`),
    which takes the spread of the gold-label probability instead.
    """
    arr = check_loss_matrix(losses)
    return arr.std(axis=1, dtype=np.float64)


def _gold_probability(losses: np.ndarray) -> np.ndarray:
    """``p = exp(-loss)`` per sample and snapshot: for a causal LM's per-sample loss (the mean
    next-token NLL) the geometric mean of the probabilities the model gives the sample's targets,
    the LM's reading of dataset cartography's "probability of the gold label"."""
    return np.exp(-check_loss_matrix(losses).astype(np.float64))


def confidence(losses: np.ndarray) -> np.ndarray:
    """Dataset cartography's confidence: the mean over snapshots of the gold-label probability,
    ``mean_t exp(-L[t, i])``; the most confidently fitted samples first.

    Source: Swayamdipta et al. (2020), "Dataset Cartography", section 2 (confidence = mean of
    ``p(y* | x)`` over epochs), with ``p = exp(-loss)`` for a language model's per-sample loss.
    """
    return _gold_probability(losses).mean(axis=1)


def variability(losses: np.ndarray) -> np.ndarray:
    """Dataset cartography's variability: the standard deviation over snapshots of the gold-label
    probability ``exp(-L[t, i])`` (population, ``ddof = 0``, as the paper's ``sqrt(sum (p - mean)^2 / E)``).

    Source: Swayamdipta et al. (2020), "Dataset Cartography", section 2. A sample whose loss falls
    from 6 to 5 barely moves ``p``; one that falls from 1 to 0.1 moves it a lot, so this weighs the
    changes of well-fitted samples, where :func:`loss_std` weighs every nat alike.
    """
    return _gold_probability(losses).std(axis=1)


def reference_ratio(
    losses: np.ndarray, *, burn_in: int | None = None, reference: np.ndarray | None = None
) -> np.ndarray:
    """Minus the final loss over a reference model's loss: samples fitted far beyond the reference first.

    Source: the reference-model ratio of Carlini et al. (2021, "Extracting training data from
    large language models"): a sample whose loss the trained model lowered far below a reference
    model's is memorized rather than merely easy.

    Args:
        reference (`np.ndarray` of shape `(N,)`, *optional*): the reference model's per-sample
            losses, all positive. Defaults to the burn-in snapshot ``L[:, T_e - 1]``, the model the
            curated arms continue from.
        burn_in (`int`, *optional*): ``T_e``; needed only when ``reference`` is not given.
    """
    arr = check_loss_matrix(losses)
    if reference is None:
        if burn_in is None:
            raise ValueError("reference_ratio needs a reference model's losses or burn_in (its snapshot is used)")
        if isinstance(burn_in, bool) or not isinstance(burn_in, (int, np.integer)) or not 1 <= burn_in <= arr.shape[1]:
            raise ValueError(f"burn_in must be a snapshot in [1, {arr.shape[1]}]; got {burn_in!r}")
        ref = arr[:, int(burn_in) - 1].astype(np.float64)
    else:
        ref = np.asarray(reference, dtype=np.float64)
        if ref.shape != (arr.shape[0],):
            raise ValueError(f"reference must have shape ({arr.shape[0]},), one loss per sample; got {ref.shape}")
    bad = np.flatnonzero(~(np.isfinite(ref) & (ref > 0)))
    if bad.size:
        raise ValueError(
            f"reference losses must be finite and positive for a ratio; {bad.size} are not, "
            f"first rows {bad[:5].tolist()}"
        )
    return -arr[:, -1].astype(np.float64) / ref


#: The detectors :func:`combined_rank` averages by default: the three loss-based detectors that
#: lowered leakage most at a 10% pruning budget in the committed ``cpu-paper`` runs (README,
#: results/gpt2_paper_cpu), each one a different view of memorization (how far the loss fell, how
#: far below the model the arms start from, how much it moved).
COMBINED_COMPONENTS = ("loss_drop", "reference_ratio", "loss_std")


def average_ranks(scores: np.ndarray) -> np.ndarray:
    """Ranks ``1 .. N`` of ``scores`` in ascending order, tied values sharing the mean of their
    ranks (``scipy.stats.rankdata(method="average")``), as float64."""
    s = np.asarray(scores, dtype=np.float64)
    order = np.argsort(s, kind="stable")
    sorted_s = s[order]
    # Runs of equal values: each gets the mean of the positions it spans.
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    mean_rank = (starts + ends + 1) / 2.0  # positions start+1 .. end, averaged
    ranks = np.empty(s.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def combined_rank(
    losses: np.ndarray,
    *,
    burn_in: int | None = None,
    reference: np.ndarray | None = None,
    components: Sequence[str] = COMBINED_COMPONENTS,
) -> np.ndarray:
    """The mean over ``components`` of each sample's rank under that detector, divided by ``N``:
    in ``(0, 1]``, higher = curate first; needs no planted truth.

    Averaging ranks rather than scores puts detectors of different units (nats, ratios, nats of
    spread) on one scale, and a sample reaches the top only if several views agree that it was
    memorized, which is what a single detector's outliers (a block the first snapshot found odd,
    a block whose loss is noisy) do not do. Ties within a component share their mean rank.

    Source: rank aggregation of membership-inference signals (the Borda count); the components
    are :data:`COMBINED_COMPONENTS` unless given.

    Unlike the other detectors (but like ``random``), a row's score depends on every other row, so
    :func:`add_detector_scores` computes it once over the whole matrix.
    """
    arr = check_loss_matrix(losses)
    names = list(components)
    if not names or "combined" in names or "random" in names:
        raise ValueError(f"components must be loss-based detectors other than combined and random; got {names}")
    total = np.zeros(arr.shape[0], dtype=np.float64)
    for name in names:
        total += average_ranks(detector_scores(name, arr, burn_in=burn_in, reference=reference))
    return total / (len(names) * arr.shape[0])


def random_score(losses: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """Uniform random scores from ``numpy.random.default_rng(seed)``, one per row in row order:
    the control every detector is compared with."""
    arr = check_loss_matrix(losses)
    return np.random.default_rng(seed).random(arr.shape[0])


@dataclass(frozen=True)
class Detector:
    """A named detector: its function and the settings it takes besides the loss matrix."""

    name: str
    function: Callable[..., np.ndarray]
    needs: tuple[str, ...] = ()  # settings it cannot do without
    accepts: tuple[str, ...] = ()  # settings it uses when given

    @property
    def column(self) -> str:
        """The ``carto_score_<name>`` column :func:`add_detector_scores` writes."""
        return score_column(self.name)


#: Every detector by name, in the order reports list them.
DETECTORS: dict[str, Detector] = {
    d.name: d
    for d in (
        Detector("memorization", memorization_score, needs=("eps", "burn_in")),
        Detector("soft_forgetting", soft_forgetting, needs=("eps",), accepts=("temperature",)),
        Detector("final_loss", final_loss),
        Detector("min_loss", min_loss),
        Detector("mean_loss", mean_loss),
        Detector("loss_drop", loss_drop),
        Detector("loss_std", loss_std),
        Detector("confidence", confidence),
        Detector("variability", variability),
        Detector("reference_ratio", reference_ratio, accepts=("burn_in", "reference")),
        Detector("combined", combined_rank, accepts=("burn_in", "reference")),
        Detector("random", random_score, accepts=("seed",)),
    )
}


def detector_names(names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against :data:`DETECTORS` (all of them, in registry order, when `None`).

    Raises:
        ValueError: naming every unknown detector and listing the known ones, or on a repeated name.
    """
    if names is None:
        return list(DETECTORS)
    if isinstance(names, str):
        names = [names]
    names = list(names)
    unknown = [n for n in names if n not in DETECTORS]
    if unknown:
        raise ValueError(f"unknown detector(s) {unknown}; known detectors are {list(DETECTORS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"detector(s) {repeated} named more than once")
    return names


def detector_scores(name: str, losses: np.ndarray, **settings: Any) -> np.ndarray:
    """Detector ``name``'s scores on ``losses``, given only the settings it takes.

    Args:
        name (`str`): a key of :data:`DETECTORS`.
        losses (`np.ndarray` of shape `(N, T)`): the loss matrix.
        **settings: any of ``eps``, ``burn_in``, ``reference``, ``seed``, ``temperature``; each
            detector takes the ones it uses and ignores the rest (``None`` counts as not given).

    Raises:
        ValueError: on an unknown name or a setting the detector needs and did not get.
    """
    (name,) = detector_names([name])
    detector = DETECTORS[name]
    given = {k: v for k, v in settings.items() if v is not None}
    missing = [k for k in detector.needs if k not in given]
    if missing:
        raise ValueError(f"detector {name!r} needs {missing}")
    used = {k: given[k] for k in (*detector.needs, *detector.accepts) if k in given}
    return detector.function(losses, **used)


def _score_batch(names: list[str], settings: dict, full: dict[str, np.ndarray]):
    # Called by map with the loss columns (input_columns, in snapshot order), then the row indices.
    def score(*args) -> dict[str, np.ndarray]:
        *columns, indices = args
        losses = np.column_stack([np.asarray(c, dtype=np.float64) for c in columns])
        rows = np.asarray(indices, dtype=np.int64)
        row_settings = dict(settings)
        if row_settings.get("reference") is not None:
            row_settings["reference"] = row_settings["reference"][rows]
        out = {}
        for name in names:
            if name in full:  # depends on the row's position in the whole dataset
                out[score_column(name)] = full[name][rows]
            else:
                out[score_column(name)] = detector_scores(name, losses, **row_settings)
        return out

    return score


def add_detector_scores(
    dataset: Dataset,
    names: Sequence[str] | None = None,
    *,
    eps: float | None = None,
    burn_in: int | None = None,
    reference: np.ndarray | None = None,
    seed: int = 0,
    temperature: float | None = None,
    batch_size: int = 1000,
    keep_in_memory: bool = False,
) -> Dataset:
    """Write one ``carto_score_<name>`` float64 column per detector with a batched ``Dataset.map``.

    Each batch reads only the ``carto_loss_1 .. carto_loss_T`` columns and scores its rows; every
    detector here but two is a function of a row's own losses, so the columns equal the pure
    functions applied to the whole matrix. ``random`` (its number for a row depends on the row's
    position) and ``combined`` (ranks over every row) are computed once for all ``N`` rows and
    indexed per batch.

    Args:
        dataset (`datasets.Dataset`): carries the loss columns (see :func:`hf_carto.add_loss_columns`).
        names (`Sequence[str]`, *optional*): detectors to write; all of :data:`DETECTORS` by default.
        eps (`float`, *optional*): the resolved forget threshold (``CartographyFit.eps``); needed by
            ``memorization`` and ``soft_forgetting``.
        burn_in (`int`, *optional*): ``T_e`` in snapshots; needed by ``memorization``, and by
            ``reference_ratio`` when no ``reference`` is given.
        reference (`np.ndarray` of shape `(N,)`, *optional*): a reference model's losses in row order.
        seed (`int`, *optional*, defaults to `0`): the ``random`` detector's seed.
        keep_in_memory (`bool`, *optional*, defaults to `False`): passed to ``map`` (no cache file
            next to a dataset loaded from disk).

    Raises:
        ValueError: on an unknown detector, a missing setting, or non-finite losses.
    """
    from datasets import Value

    names = detector_names(names)
    columns = loss_columns(dataset.column_names)
    settings = {"eps": eps, "burn_in": burn_in, "reference": reference, "seed": seed, "temperature": temperature}
    if reference is not None:
        settings["reference"] = np.asarray(reference, dtype=np.float64)
        if settings["reference"].shape != (len(dataset),):
            raise ValueError(f"reference must have one loss per row ({len(dataset)}); got shape {np.shape(reference)}")
    for name in names:  # fail before any batch runs
        missing = [k for k in DETECTORS[name].needs if settings.get(k) is None]
        if missing:
            raise ValueError(f"detector {name!r} needs {missing}")
    full = {}
    if "random" in names:
        full["random"] = np.random.default_rng(seed).random(len(dataset))
    if "combined" in names:  # ranks over every row: computed once on the whole matrix
        matrix = read_columns(dataset, columns)
        losses = np.column_stack([np.asarray(matrix[c], dtype=np.float64) for c in columns])
        full["combined"] = detector_scores("combined", losses, **settings)
    return map_columns(
        dataset,
        _score_batch(names, settings, full),
        {score_column(name): Value("float64") for name in names},
        batch_size=batch_size,
        with_indices=True,
        input_columns=columns,
        keep_in_memory=keep_in_memory,
        desc="Detector scores",
    )


def top_budget(scores: np.ndarray, fraction: float, *, sample_ids: np.ndarray | None = None) -> BudgetSelection:
    """The top ``fraction`` of samples by a detector's score, ties broken by ascending sample_id.

    The budget is ``k = floor(fraction * N + 0.5)`` samples, as for
    :func:`hf_carto.select_top_memorized`. Samples are ranked by descending score; samples with
    equal scores by **ascending sample_id** (row index when no ids are given): a key unrelated to
    any loss, so that the tie-break adds no signal of its own. The returned
    :class:`hf_carto.BudgetSelection` says how many samples shared the score at the cut and how
    many of them the tie-break kept; :func:`decided_by_tie_break` turns that into the number of
    the cut the tie-break decided.

    Raises:
        ValueError: on a non-finite score, a wrong shape, or a fraction outside `[0, 1]`.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array; got shape {s.shape}")
    bad = np.flatnonzero(~np.isfinite(s))
    if bad.size:
        raise ValueError(f"scores has {bad.size} non-finite values; first rows {bad[:5].tolist()}")
    return select_top_memorized(s, fraction, sample_ids=sample_ids)


def decided_by_tie_break(selection: BudgetSelection) -> int:
    """How many samples of a cut the tie-break chose: the selected ones tied at the cut value, when
    some of that tied group were left out (0 when the whole group fits in the budget)."""
    return selection.n_tied_selected if selection.n_tied_selected < selection.n_tied_at_cut else 0
