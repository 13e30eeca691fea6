"""Cartography on a ``datasets.Dataset``: scores, quadrant labels and intervention weights.

The dataset carries one ``carto_loss_{t}`` column per snapshot ``t = 1..T`` (the recorder writes
them). Scoring is two steps, because the quadrant thresholds depend on every sample:

1. :func:`fit_cartography` streams the loss columns in batches (never the other columns), checks
   them, resolves ``eps`` and computes the thresholds ``tau_d`` / ``tau_m``;
2. :func:`add_cartography` applies the fitted :class:`CartographyFit` with a batched
   ``Dataset.map`` (``num_proc`` works), adding ``carto_difficulty``, ``carto_memorization`` and
   ``carto_quadrant``.

Both refuse losses that no cross-entropy produces: NaN or infinite values (a NaN compares false
with every threshold, so its row would be labelled ``stable_easy``) and negative ones. The error
names the columns, how many rows and their first ``sample_id``s; ``allow_nonfinite`` and
``allow_negative`` accept them on purpose.

:func:`apply_interventions` then adds ``carto_loss_weight``, ``carto_sampling_weight`` and
``carto_keep``. Rows are only labelled, never dropped: removing them is an explicit
``dataset.filter(lambda keep: keep, input_columns="carto_keep")``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
from datasets import ClassLabel, Dataset, Features, Value

# The column names and helpers below moved to `columns`; importing them from here keeps working.
from hf_carto.core.columns import (
    DIFFICULTY,
    DUP_EXACT_SIZE,
    DUP_NEAR_SIZE,
    KEEP,
    LEAK_COLUMNS,
    LOSS_COLUMN_PREFIX,
    LOSS_WEIGHT,
    MEMORIZATION,
    QUADRANT,
    SAMPLE_ID,
    SAMPLING_WEIGHT,
    iter_columns,
    loss_columns,
    read_columns,
)
from hf_carto.score.combined_runs import combined_scores, pooled_eps, run_matrices
from hf_carto.score.scores import (
    Quadrant,
    assign_quadrants,
    check_alpha,
    check_burn_in,
    eps_from_min,
    forget_event_counts,
    never_below,
    never_learned,
    parse_eps,
)

__all__ = [
    "LOSS_COLUMN_PREFIX",
    "SAMPLE_ID",
    "CartographyFit",
    "loss_columns",
    "fit_cartography",
    "add_cartography",
    "apply_interventions",
    "cartography_summary",
    "format_summary",
]

DEFAULT_BATCH_SIZE = 65_536


def quadrant_feature() -> ClassLabel:
    """The ``ClassLabel`` of the ``carto_quadrant`` column: the lower-case quadrant names in id order."""
    return ClassLabel(names=Quadrant.names())


def _matrix(columns: tuple[Any, ...]) -> np.ndarray:
    return np.stack([np.asarray(col, dtype=np.float64) for col in columns], axis=1)


def _as_numpy(column: Any) -> np.ndarray:
    if isinstance(column, (pa.Array, pa.ChunkedArray)):
        return column.to_numpy(zero_copy_only=False)
    array = np.asarray(column)
    # A Python list with None (a null) is an object array: float64, None as NaN, as _matrix reads it.
    return array.astype(np.float64) if array.dtype == object else array


def _is_clean(columns: list[np.ndarray], allow_negative: bool) -> bool:
    """Whether every value is finite (and >= 0 unless ``allow_negative``): a min and a max per
    column, which NaN propagates into, decide it without a per-value mask."""
    low = -math.inf if allow_negative else 0.0
    for column in columns:
        if column.size:
            smallest, largest = column.min(), column.max()
            if not (smallest >= low and -math.inf < smallest and largest < math.inf):
                return False
    return True


def _checked_columns(
    dataset: Dataset, columns: list[str], batch_size: int, allow_nonfinite: bool, allow_negative: bool, check=True
) -> Iterator[list[np.ndarray]]:
    """Yield each batch's loss columns, restricted to its rows with finite losses; with ``check``,
    after the last batch raise if any loss was refused, every batch checked first so that the
    message counts all offending rows.

    A batch whose values are all accepted (the normal case) goes through as the stored arrays; only
    a batch with a refused or non-finite value is made a float64 matrix, masked, and has its
    ``sample_id``s read to name the rows.
    """
    nonfinite = _Refused("non-finite (NaN or inf)", "allow_nonfinite=True (hf-carto score --allow-nonfinite)")
    negative = _Refused("negative", "allow_negative=True (hf-carto score --allow-negative)")
    ids_view = None
    for start, batch in iter_columns(dataset, columns, batch_size):
        arrays = [batch[c] for c in columns]
        if _is_clean(arrays, allow_negative):
            yield arrays
            continue
        losses = _matrix(arrays)
        finite = np.isfinite(losses)
        if check:
            ids = None
            if SAMPLE_ID in dataset.column_names:
                if ids_view is None:
                    ids_view = dataset.select_columns([SAMPLE_ID]).with_format("arrow")
                ids = ids_view[start : start + losses.shape[0]].column(SAMPLE_ID).to_numpy()
            if not allow_nonfinite:
                nonfinite.add(~finite, start, ids)
            if not allow_negative:
                negative.add(finite & (losses < 0), start, ids)
        rows = finite.all(axis=1)
        kept = losses if rows.all() else losses[rows]
        yield [kept[:, t] for t in range(kept.shape[1])]
    refused = [r for r in (nonfinite, negative) if r.rows]
    if refused:
        label = "sample_ids" if SAMPLE_ID in dataset.column_names else "rows"
        problems = "; ".join(r.describe(len(dataset), columns, label) for r in refused)
        options = " or ".join(r.option for r in refused)
        raise ValueError(
            f"{problems}. A cross-entropy loss is a finite number >= 0: were these columns recorded or edited "
            f"by something else? Pass {options} to score them as they are"
        )


def _check_loss_types(dataset: Dataset, columns: list[str]) -> None:
    """Refuse loss columns that do not hold one number per row (strings, lists, booleans)."""
    bad = []
    for name in columns:
        feature = dataset.features.get(name)
        pa_type = getattr(feature, "pa_type", None) if isinstance(feature, Value) else None
        if pa_type is None or not (pa.types.is_floating(pa_type) or pa.types.is_integer(pa_type)):
            bad.append(f"{name} ({feature})")
    if bad:
        raise ValueError(
            f"loss columns must hold one number per row; {len(bad)} of {len(columns)} do not, in all "
            f"{len(dataset)} rows: {', '.join(bad[:3])}{f' and {len(bad) - 3} more' if len(bad) > 3 else ''}. "
            "Cast them to float32 (Dataset.cast_column) if they hold numbers written as text"
        )


@dataclass
class _Refused:
    """Rows with losses of one refused kind, counted over every batch, the first few named."""

    kind: str
    option: str
    rows: int = 0
    first: list[int] = field(default_factory=list)
    columns: set[int] = field(default_factory=set)

    def add(self, bad: np.ndarray, start: int, ids: np.ndarray | None) -> None:
        """``bad``: the ``(B, T)`` mask of refused values of the batch starting at row ``start``."""
        rows = np.flatnonzero(bad.any(axis=1))
        if rows.size == 0:
            return
        self.rows += rows.size
        labels = ids[rows] if ids is not None else rows + start
        self.first.extend(int(x) for x in labels[: max(0, 5 - len(self.first))])
        self.columns.update(int(c) for c in np.flatnonzero(bad.any(axis=0)))

    def describe(self, total: int, columns: list[str], label: str) -> str:
        names = [columns[c] for c in sorted(self.columns)]
        shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
        return f"{self.rows} of {total} rows have {self.kind} losses (in {shown}); first {label}: {self.first}"


def _refused_in_batch(losses: np.ndarray, allow_nonfinite: bool, allow_negative: bool) -> str | None:
    finite = np.isfinite(losses)
    problems = []
    if not allow_nonfinite and not finite.all():
        problems.append(f"{int((~finite).any(axis=1).sum())} rows with non-finite (NaN or inf) losses")
    if not allow_negative and (negative := finite & (losses < 0)).any():
        problems.append(f"{int(negative.any(axis=1).sum())} rows with negative losses")
    return " and ".join(problems) or None


def _difficulty(columns: list[np.ndarray], burn_in: int) -> np.ndarray:
    """d of a batch from its loss columns: the mean of the first ``burn_in`` as float64, the same
    arithmetic as ``matrix[:, :burn_in].mean(axis=1)`` (only those columns are made a matrix).
    One or two columns need no matrix; they are added as numpy's reduction adds them, from a 0.0
    start after the first value (which is what turns a -0.0 mean into 0.0)."""
    first = np.asarray(columns[0], dtype=np.float64)
    if burn_in == 1:
        return (first + 0.0) / 1.0
    if burn_in == 2:
        total = first + (0.0 + np.asarray(columns[1], dtype=np.float64))
        total /= 2.0
        return total
    return np.stack([np.asarray(c, dtype=np.float64) for c in columns[:burn_in]], axis=1).mean(axis=1)


def _quantile_dtype(dataset: Dataset, columns: list[str]) -> np.dtype:
    """The type a quantile eps is taken in: the type ``np.stack`` gives the loss columns, as
    :func:`~hf_carto.score.scores.resolve_eps` takes ``np.quantile`` of that matrix. float32 columns (what
    the recorder writes) give float32; any float64 or integer column gives float64, so a float64
    loss of 0.7 is not read as float32's 0.699999988."""
    types = [np.dtype(dataset.features[name].pa_type.to_pandas_dtype()) for name in columns]
    common = np.result_type(*types)
    return np.dtype(np.float32) if common in (np.float16, np.float32) else np.dtype(np.float64)


def _as_dtype(column: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``column`` in ``dtype``, through float64 as the matrix holds integers (an int64 above 2^53
    rounds differently straight to float32)."""
    if column.dtype.kind == "f" and column.dtype.itemsize >= 4:
        return column.astype(dtype, copy=False)
    return np.asarray(column, dtype=np.float64).astype(dtype, copy=False)


def _forget_counts(columns: list[np.ndarray], eps: float) -> np.ndarray:
    """Forget events per row from the loss columns (:func:`hf_carto.score.scores.forget_event_counts`,
    in uint8 while T < 256 to keep a 10^8-row batch small)."""
    return forget_event_counts(columns, eps, dtype=np.uint8 if len(columns) < 256 else np.int64)


def _batch_scores(columns: list[np.ndarray], burn_in: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """d and m of one batch; the same arithmetic in the fit and the map keeps them identical."""
    return _difficulty(columns, burn_in), _forget_counts(columns, eps) / float(len(columns) - 1)


@dataclass(frozen=True)
class CartographyFit:
    """Everything needed to label any row, plus what to report about how it was decided.

    Apply it to a dataset with :func:`add_cartography`, or directly as a batched ``map`` function::

        dataset.map(fit, batched=True, input_columns=list(fit.loss_columns), features=...)

    ``allow_nonfinite`` and ``allow_negative`` say which refused losses the fit was told to accept;
    applying it accepts the same ones and refuses the others.
    """

    loss_columns: tuple[str, ...]
    burn_in: int
    eps: float
    eps_spec: str
    alpha_d: float
    alpha_m: float
    tau_d: float
    tau_m: float
    num_samples: int
    num_with_forget_events: int
    allow_nonfinite: bool = False
    allow_negative: bool = False
    #: Mapping runs (seeds) combined by the fit; see :mod:`hf_carto.score.combined_runs`.
    num_runs: int = 1
    #: Rows whose loss is never below eps (never fitted, so m = 0 however they move; see
    #: :func:`hf_carto.score.scores.never_learned`); None in fits written before it was counted.
    num_never_learned: int | None = None

    @property
    def num_snapshots(self) -> int:
        return len(self.loss_columns)

    def __call__(self, *columns: Any) -> dict[str, np.ndarray]:
        if self.num_runs > 1:
            raise ValueError(
                f"this fit combines {self.num_runs} runs: score with add_cartography(list_of_runs, fit), "
                "not one run's losses"
            )
        arrays = [_as_numpy(c) for c in columns]
        if not _is_clean(arrays, self.allow_negative):
            losses = _matrix(arrays)
            # add_cartography checked every row with its sample_id first; this guards a direct map.
            refused = _refused_in_batch(losses, self.allow_nonfinite, self.allow_negative)
            if refused:
                raise ValueError(
                    f"a batch of {losses.shape[0]} rows has {refused} in "
                    f"{self.loss_columns[0]}..{self.loss_columns[-1]}; add_cartography names their sample_ids"
                )
            arrays = [losses[:, t] for t in range(losses.shape[1])]
        d, m = _batch_scores(arrays, self.burn_in, self.eps)
        quadrant = (d > self.tau_d).astype(np.int64) + 2 * (m > self.tau_m).astype(np.int64)
        return {DIFFICULTY: d, MEMORIZATION: m, QUADRANT: quadrant}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["loss_columns"] = list(self.loss_columns)
        out["num_snapshots"] = self.num_snapshots
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CartographyFit:
        """The fit :meth:`to_dict` wrote; keys written by later versions are ignored.

        Raises:
            ValueError: listing the missing keys, or the values of the wrong type.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a cartography fit is a JSON object; got a {type(data).__name__}")
        fields = dataclasses.fields(cls)
        missing = [f.name for f in fields if f.default is dataclasses.MISSING and f.name not in data]
        if missing:
            raise ValueError(f"the cartography fit lacks {missing}")
        values = {f.name: data[f.name] for f in fields if f.name in data}
        wrong = [name for name, value in values.items() if not _FIT_FIELD_CHECKS[name](value)]
        if wrong:
            raise ValueError(f"the cartography fit has values of the wrong type for {wrong}")
        values["loss_columns"] = tuple(values["loss_columns"])
        return cls(**values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# What each field of a fit read back from JSON must be; a fit is also read from files people edit.
_FIT_FIELD_CHECKS = {
    "loss_columns": lambda v: isinstance(v, (list, tuple)) and all(isinstance(c, str) for c in v),
    "burn_in": _is_count,
    "eps": _is_number,
    "eps_spec": lambda v: isinstance(v, str),
    "alpha_d": _is_number,
    "alpha_m": _is_number,
    "tau_d": _is_number,
    "tau_m": _is_number,
    "num_samples": _is_count,
    "num_with_forget_events": _is_count,
    "allow_nonfinite": lambda v: isinstance(v, bool),
    "allow_negative": lambda v: isinstance(v, bool),
    "num_runs": lambda v: _is_count(v) and v >= 1,
    "num_never_learned": lambda v: v is None or _is_count(v),
}


def fit_cartography(
    dataset: Dataset | Sequence[Dataset],
    *,
    burn_in: int,
    eps: float | str,
    alpha_d: float = 0.75,
    alpha_m: float = 0.75,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_nonfinite: bool = False,
    allow_negative: bool = False,
) -> CartographyFit:
    """Resolve ``eps`` and the quadrant thresholds from the ``carto_loss_{t}`` columns.

    Reads only the loss columns (and ``sample_id`` for error messages), ``batch_size`` rows at a
    time, and holds no per-row array: the quantiles (``tau_d``, and a ``"quantile:q"`` eps) are
    found exactly by radix selection (:mod:`hf_carto.score.order_statistics`), so 10^8 memory-mapped
    rows score in memory independent of ``N``. Two passes over the columns for a number or a
    ``min`` eps, four for a quantile eps (one more, rarely, for a value shared by millions of rows).

    Several mapping runs (seeds) of the same data: pass a list of datasets, one a run, each with
    its own `carto_loss_*` columns (e.g. from :func:`hf_carto.add_loss_columns` of each run folder).
    Their scores are combined: forget events summed over runs (``m = sum F / sum (T_r - 1)``),
    difficulty averaged over runs, eps resolved on every run's losses pooled; rows are matched by
    ``sample_id`` (see :mod:`hf_carto.score.combined_runs`). ``allow_nonfinite`` is not available there.

    Args:
        dataset (`datasets.Dataset`, or a list of them): rows with `carto_loss_1 .. carto_loss_T`.
        burn_in (`int`): `T_e` in `[1, T - 1]`; difficulty is the mean of the first `T_e` losses.
        eps (`float` or `str`): forget-event threshold or policy, see :func:`hf_carto.resolve_eps`.
        alpha_d (`float`, *optional*, defaults to `0.75`): percentile of `d` for `tau_d`.
        alpha_m (`float`, *optional*, defaults to `0.75`): percentile of `m` for `tau_m`.
        allow_nonfinite (`bool`, *optional*, defaults to `False`): accept NaN and infinite losses.
            Rows holding one are left out of `eps` and the thresholds and are scored as they are:
            a NaN compares false with every threshold, so a NaN score counts as neither hard nor
            memorized.
        allow_negative (`bool`, *optional*, defaults to `False`): accept negative losses, which
            no cross-entropy produces (a sign flipped in the loss, or another quantity in the
            columns); they are scored like any other value.

    Raises:
        ValueError: empty dataset, missing, non-contiguous or non-numeric loss columns, `T < 2`,
            `burn_in` outside `[1, T - 1]`, alphas outside `(0, 1)`, or non-finite or negative
            losses that were not allowed (with the columns, how many rows and the first
            sample_ids, counted over every batch).

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict(
        ...     {"carto_loss_1": [3.0, 2.0], "carto_loss_2": [0.5, 2.0], "carto_loss_3": [2.0, 2.0]}
        ... )
        >>> fit = fit_cartography(ds, burn_in=1, eps=1.0)
        >>> fit.eps, fit.num_with_forget_events
        (1.0, 1)
    """
    if not isinstance(dataset, Dataset):
        if allow_nonfinite:
            raise ValueError("allow_nonfinite is not available when combining runs; score each run alone")
        return _fit_runs(
            list(dataset),
            burn_in=burn_in,
            eps=eps,
            alpha_d=alpha_d,
            alpha_m=alpha_m,
            batch_size=batch_size,
            allow_negative=allow_negative,
        )
    if len(dataset) == 0:
        raise ValueError("the dataset is empty (0 rows); there is nothing to score")
    columns = loss_columns(dataset.column_names)
    if len(columns) < 2:
        raise ValueError(f"found {len(columns)} snapshot column ({columns[0]}); memorization needs T >= 2 snapshots")
    _check_loss_types(dataset, columns)
    burn_in = check_burn_in(burn_in, len(columns))
    alpha_d = check_alpha("alpha_d", alpha_d)
    alpha_m = check_alpha("alpha_m", alpha_m)
    kind, parameter = parse_eps(eps)

    scores = _streamed_scores(
        dataset, columns, batch_size, allow_nonfinite, allow_negative, kind, parameter, burn_in, alpha_d, alpha_m
    )
    eps_value, tau_d, tau_m, with_forget_events, never = scores
    return CartographyFit(
        loss_columns=tuple(columns),
        burn_in=burn_in,
        eps=eps_value,
        eps_spec=str(eps),
        alpha_d=alpha_d,
        alpha_m=alpha_m,
        tau_d=tau_d,
        tau_m=tau_m,
        num_samples=len(dataset),
        num_with_forget_events=with_forget_events,
        allow_nonfinite=bool(allow_nonfinite),
        allow_negative=bool(allow_negative),
        num_never_learned=never,
    )


def _streamed_scores(
    dataset: Dataset,
    columns: list[str],
    batch_size: int,
    allow_nonfinite: bool,
    allow_negative: bool,
    kind: str,
    parameter: float,
    burn_in: int,
    alpha_d: float,
    alpha_m: float,
) -> tuple[float, float, float, int, int]:
    """eps, tau_d, tau_m, the number of rows with a forget event and of rows never below eps: the numbers
    :func:`resolve_eps` and :func:`assign_quadrants` give on the whole matrix, read in batches.

    The first pass over the columns is the check (every refused value counted before the error).
    ``m`` takes at most ``T`` values, so a count per forget-event number gives ``tau_m`` exactly;
    ``d`` and the losses are continuous and go through :func:`select_ranks`.
    """
    from hf_carto.score.order_statistics import inverted_cdf_rank, lerp, linear_quantile_ranks, select_ranks

    num_snapshots = len(columns)
    state = {"passes": 0, "rows": 0, "smallest": math.inf, "eps": parameter if kind == "value" else None}
    forget = np.zeros(num_snapshots, dtype=np.int64)  # rows by number of forget events
    never = [0]  # rows never below eps

    def fitted_columns():
        """The loss columns of the rows the fit uses, batch by batch; the first call checks every value."""
        state["passes"] += 1
        first = state["passes"] == 1
        for batch in _checked_columns(dataset, columns, batch_size, allow_nonfinite, allow_negative, check=first):
            if first:
                state["rows"] += batch[0].shape[0]
                if batch[0].size and kind in ("min_plus", "min_times"):
                    state["smallest"] = min(state["smallest"], *(float(c.min()) for c in batch))
            yield batch

    def check_count(count: int) -> int:
        if count == 0:
            raise ValueError(
                f"all {len(dataset)} rows have a non-finite (NaN or inf) loss in {columns[0]}..{columns[-1]}; "
                "there is nothing to fit eps and the thresholds on"
            )
        return count

    if kind == "quantile":  # resolve_eps's numpy linear quantile of every fitted loss, in their type
        ranks = {}
        dtype = _quantile_dtype(dataset, columns)

        def eps_ranks(count: int) -> list[int]:
            ranks["below"], ranks["above"], ranks["weight"] = linear_quantile_ranks(check_count(count), parameter)
            return sorted({ranks["below"], ranks["above"]})

        found = select_ranks(
            lambda: (_as_dtype(c, dtype) for batch in fitted_columns() for c in batch),
            eps_ranks,
            dtype,
        )
        state["eps"] = lerp(found[ranks["below"]], found[ranks["above"]], ranks["weight"])

    def difficulties():
        if state["eps"] is None and state["passes"] >= 1:  # a min policy: the check pass found the minimum
            state["eps"] = eps_from_min(kind, parameter, state["smallest"])
        counting = state["eps"] is not None and not forget.any()
        for batch in fitted_columns():
            if counting:
                forget[:] += np.bincount(_forget_counts(batch, state["eps"]), minlength=num_snapshots)
                never[0] += int(never_below(batch, state["eps"]).sum())
            yield _difficulty(batch, burn_in)  # d exactly as _batch_scores computes it

    def d_rank(count: int) -> list[int]:
        return [inverted_cdf_rank(check_count(count), alpha_d)]

    tau_d = float(next(iter(select_ranks(difficulties, d_rank).values())))
    fitted = state["rows"]
    # select_ranks always reads at least twice (count, then keep), so one pass with eps known counted
    # every fitted row's forget events.
    assert forget.sum() == fitted, (int(forget.sum()), fitted)
    rank_m = inverted_cdf_rank(fitted, alpha_m)
    events = int(np.searchsorted(np.cumsum(forget), rank_m, side="right"))
    tau_m = float(events / float(num_snapshots - 1))  # m exactly as _batch_scores computes it
    return float(state["eps"]), tau_d, tau_m, int(fitted - forget[0]), never[0]


def _run_reader(batch_size: int, allow_negative: bool):
    """Reads one run's loss matrix with the same checks a single run gets."""

    def read(run: Dataset, columns: list[str]) -> np.ndarray:
        _check_loss_types(run, columns)
        batches = _checked_columns(run, columns, batch_size, False, allow_negative)
        return np.concatenate([_matrix(batch) for batch in batches])

    return read


def _fit_runs(
    runs: list[Dataset],
    *,
    burn_in: int,
    eps: float | str,
    alpha_d: float,
    alpha_m: float,
    batch_size: int,
    allow_negative: bool,
) -> CartographyFit:
    """The fit of several runs (see :mod:`hf_carto.score.combined_runs`)."""
    matrices, names = run_matrices(runs, _run_reader(batch_size, allow_negative))
    for number, columns in enumerate(names, start=1):
        try:
            check_burn_in(burn_in, len(columns))
        except ValueError as err:
            raise ValueError(f"run {number}: {err}") from None
    alpha_d = check_alpha("alpha_d", alpha_d)
    alpha_m = check_alpha("alpha_m", alpha_m)
    eps_value = pooled_eps(matrices, eps)
    d, m = combined_scores(matrices, burn_in, eps_value)
    assignment = assign_quadrants(d, m, alpha_d, alpha_m)
    return CartographyFit(
        loss_columns=tuple(names[0]),
        burn_in=burn_in,
        eps=eps_value,
        eps_spec=str(eps),
        alpha_d=alpha_d,
        alpha_m=alpha_m,
        tau_d=assignment.tau_d,
        tau_m=assignment.tau_m,
        num_samples=len(runs[0]),
        num_with_forget_events=int((m > 0).sum()),
        allow_negative=bool(allow_negative),
        num_runs=len(runs),
        num_never_learned=int(np.logical_and.reduce([never_learned(x, eps_value) for x in matrices]).sum()),
    )


def _add_runs(runs: list[Dataset], fit: CartographyFit, *, batch_size: int) -> Dataset:
    """The first run's rows with the scores and quadrants combined over ``runs`` by ``fit``."""
    if fit.num_runs != len(runs):
        raise ValueError(f"the fit combines {fit.num_runs} runs; got {len(runs)}")
    matrices, _ = run_matrices(runs, _run_reader(batch_size, fit.allow_negative))
    d, m = combined_scores(matrices, fit.burn_in, fit.eps)
    quadrant = (d > fit.tau_d).astype(np.int64) + 2 * (m > fit.tau_m).astype(np.int64)
    features = _with_columns(
        runs[0], {DIFFICULTY: Value("float64"), MEMORIZATION: Value("float64"), QUADRANT: quadrant_feature()}
    )

    def label(batch, indices):
        return {DIFFICULTY: d[indices], MEMORIZATION: m[indices], QUADRANT: quadrant[indices]}

    return runs[0].map(
        label, batched=True, with_indices=True, batch_size=batch_size, features=features, desc="Scoring (runs)"
    )


def _with_columns(dataset: Dataset, new: dict[str, Any]) -> Features:
    features = Features({k: v for k, v in dataset.features.items() if k not in new})
    features.update(new)
    return features


def add_cartography(
    dataset: Dataset | Sequence[Dataset],
    fit: CartographyFit | None = None,
    *,
    burn_in: int | None = None,
    eps: float | str | None = None,
    alpha_d: float = 0.75,
    alpha_m: float = 0.75,
    num_proc: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    allow_nonfinite: bool = False,
    allow_negative: bool = False,
) -> Dataset:
    """Add ``carto_difficulty``, ``carto_memorization`` and ``carto_quadrant`` to every row.

    Pass a ``fit`` from :func:`fit_cartography` (keep it: it holds the resolved eps and
    thresholds for your report), or pass ``burn_in`` and ``eps`` to fit here. The settings after
    ``fit`` (``alpha_d``, ``allow_nonfinite``, ...) are used only when fitting here: a given fit
    carries its own.

    Every row's losses are checked before any is labelled: non-finite and negative losses are
    refused (naming the columns, how many rows and their first sample_ids) unless the fit allows
    them (see :func:`fit_cartography`).

    A list of runs (see :func:`fit_cartography`) gives the first run's rows with the scores
    combined over every run.

    Raises:
        ValueError: as :func:`fit_cartography`, and when the dataset lacks the fit's columns.

    Example:
        >>> from datasets import Dataset
        >>> ds = Dataset.from_dict(
        ...     {"carto_loss_1": [3.0, 2.0], "carto_loss_2": [0.5, 2.0], "carto_loss_3": [2.0, 2.0]}
        ... )
        >>> list(add_cartography(ds, burn_in=1, eps=1.0, alpha_d=0.5, alpha_m=0.5)["carto_quadrant"])
        [3, 0]
    """
    fitted_here = fit is None
    if fitted_here:
        if burn_in is None or eps is None:
            raise ValueError("add_cartography needs either a fit or both burn_in and eps")
        fit = fit_cartography(
            dataset,
            burn_in=burn_in,
            eps=eps,
            alpha_d=alpha_d,
            alpha_m=alpha_m,
            batch_size=batch_size,
            allow_nonfinite=allow_nonfinite,
            allow_negative=allow_negative,
        )
    if not isinstance(dataset, Dataset):
        return _add_runs(list(dataset), fit, batch_size=batch_size)
    if fit.num_runs > 1:
        raise ValueError(f"the fit combines {fit.num_runs} runs; pass the list of runs, not one dataset")
    if not fitted_here:
        missing = [c for c in fit.loss_columns if c not in dataset.column_names]
        if missing:
            raise ValueError(f"the dataset lacks loss columns the fit was made with: {missing}")
        columns = list(fit.loss_columns)
        _check_loss_types(dataset, columns)
        # One streaming pass over the loss columns, so that a refused row is named by its
        # sample_id (the map function sees only the losses) and nothing is labelled before.
        for _ in _checked_columns(dataset, columns, batch_size, fit.allow_nonfinite, fit.allow_negative):
            pass
    new = {DIFFICULTY: Value("float64"), MEMORIZATION: Value("float64"), QUADRANT: quadrant_feature()}
    options = dict(
        batched=True,
        batch_size=batch_size,
        input_columns=list(fit.loss_columns),
        num_proc=num_proc,
        desc="Scoring (difficulty, memorization, quadrant)",
        writer_batch_size=batch_size,  # datasets' default (1,000 rows a write) costs more than the scoring
    )
    if dataset._indices is not None:  # a shuffled or filtered view: map it whole, as datasets does
        return dataset.map(fit, features=_with_columns(dataset, new), **options)
    # Only the three new columns are written (the map sees the loss columns alone) and set beside
    # the others: a dataset with token ids and text is not copied to add three numbers a row.
    # The map reads Arrow arrays, not Python lists: converting 10^8 x T floats to lists and back
    # would cost more than the scoring itself.
    scores = (
        dataset.select_columns(list(fit.loss_columns))
        .with_format("arrow")
        .map(fit, features=Features(new), remove_columns=list(fit.loss_columns), **options)
    )
    from datasets import concatenate_datasets

    kept = dataset.remove_columns([c for c in new if c in dataset.column_names])
    scored = concatenate_datasets([kept, scores.with_format(None)], axis=1)
    # The dataset's format, as map would have kept it: a restricted column list gains the new columns.
    fmt = dataset.format
    columns = None if fmt["columns"] is None else [c for c in fmt["columns"] if c not in new] + list(new)
    if fmt["type"] is not None or columns is not None:
        scored.set_format(
            fmt["type"], columns=columns, output_all_columns=fmt["output_all_columns"], **fmt["format_kwargs"]
        )
    return scored


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
    features = _with_columns(
        dataset, {LOSS_WEIGHT: Value("float32"), SAMPLING_WEIGHT: Value("float32"), KEEP: Value("bool")}
    )
    labelled = dataset.map(
        rule,
        batched=True,
        batch_size=batch_size,
        input_columns=QUADRANT,
        features=features,
        num_proc=num_proc,
        desc="Applying interventions",
    )
    return labelled if by_cluster is None else _treat_clusters(labelled, by_cluster, batch_size)


def _treat_clusters(dataset: Dataset, column: str, batch_size: int) -> Dataset:
    """Give every member of a cluster the strongest treatment among its members."""
    values = read_columns(dataset, [column, LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP])
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

    return dataset.map(
        treat,
        batched=True,
        with_indices=True,
        batch_size=batch_size,
        desc=f"Treating clusters ({column})",
        features=dataset.features,
    )


def cartography_summary(dataset: Dataset, fit: CartographyFit | None = None) -> dict[str, Any]:
    """Dataset-level summary: quadrant counts and means, thresholds, eps, weight totals.

    Reads only the ``carto_*`` score and weight columns. ``fit`` adds the settings (eps, burn-in,
    thresholds); without it only what the columns say is reported. With the duplicate columns
    (:func:`hf_carto.add_duplicate_columns`), ``"hotspot_duplication"`` says how many hotspots are
    duplicated text and how many unique; with the leakage columns
    (:func:`hf_carto.add_leakage_columns`), ``"leakage"`` counts extractable rows and averages the
    evidence, overall and per quadrant.
    """
    if QUADRANT not in dataset.column_names:
        raise ValueError(f"the dataset has no '{QUADRANT}' column; run add_cartography first")
    cols = read_columns(dataset, [QUADRANT, DIFFICULTY, MEMORIZATION])
    q, d, m = cols[QUADRANT].astype(np.int64), cols[DIFFICULTY], cols[MEMORIZATION]
    n = int(q.size)
    quadrants = {}
    for quad in Quadrant:
        sel = q == quad
        count = int(sel.sum())
        quadrants[quad.name.lower()] = {
            "id": int(quad),
            "count": count,
            "fraction": count / n if n else 0.0,
            "mean_difficulty": float(d[sel].mean()) if count else None,
            "mean_memorization": float(m[sel].mean()) if count else None,
        }
    summary: dict[str, Any] = {
        "num_samples": n,
        "num_with_forget_events": int((m > 0).sum()),
        "max_memorization": float(m.max()) if n else None,
        "quadrants": quadrants,
    }
    if fit is not None:
        summary["settings"] = fit.to_dict()
    if all(c in dataset.column_names for c in (LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP)):
        cols = read_columns(dataset, [LOSS_WEIGHT, SAMPLING_WEIGHT, KEEP])
        lw, sw, keep = cols[LOSS_WEIGHT], cols[SAMPLING_WEIGHT], cols[KEEP]
        summary["weights"] = {
            "num_kept": int(keep.sum()),
            "num_removed": int((~keep).sum()),
            "loss_weight_total": float(lw.sum(dtype=np.float64)),
            "sampling_weight_total": float(sw.sum(dtype=np.float64)),
            "num_down_weighted": int(((lw > 0) & (lw < 1)).sum()),
            "num_up_sampled": int((sw > 1).sum()),
        }
    if all(c in dataset.column_names for c in (DUP_EXACT_SIZE, DUP_NEAR_SIZE)):
        from hf_carto.score.duplicates import hotspot_duplication

        summary["hotspot_duplication"] = hotspot_duplication(dataset)
    if all(c in dataset.column_names for c in LEAK_COLUMNS):
        from hf_carto.measure.leakage_columns import leakage_summary

        leakage = leakage_summary(dataset, by=QUADRANT)
        names = {str(int(quad)): quad.name.lower() for quad in Quadrant}
        leakage["by_quadrant"] = {names[key]: value for key, value in leakage.pop("by").items()}
        summary["leakage"] = leakage
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of :func:`cartography_summary`'s output."""
    lines = []
    settings = summary.get("settings")
    if settings:
        lines.append(
            f"snapshots T={settings['num_snapshots']}  burn-in T_e={settings['burn_in']}  "
            f"eps={settings['eps']:.6g} (from {settings['eps_spec']!r})"
        )
        lines.append(
            f"tau_d={settings['tau_d']:.6g} (alpha_d={settings['alpha_d']:g})  "
            f"tau_m={settings['tau_m']:.6g} (alpha_m={settings['alpha_m']:g})"
        )
    n = summary["num_samples"]
    max_m = summary["max_memorization"]
    lines.append(
        f"samples={n}  with a forget event={summary['num_with_forget_events']} "
        f"({summary['num_with_forget_events'] / max(n, 1):.1%})  max m={'-' if max_m is None else f'{max_m:.3g}'}"
    )
    if settings and settings.get("num_never_learned") is not None:
        never = settings["num_never_learned"]
        lines.append(
            f"never below eps={never} ({never / max(settings['num_samples'], 1):.1%}): never fitted, so m = 0 "
            "(hf_carto.score.scores.never_learned names them)"
        )
    header = f"{'quadrant':<20} {'count':>9} {'share':>7} {'mean d':>9} {'mean m':>8}"
    lines += [header, "-" * len(header)]
    for name, row in summary["quadrants"].items():
        md = "-" if row["mean_difficulty"] is None else f"{row['mean_difficulty']:.4g}"
        mm = "-" if row["mean_memorization"] is None else f"{row['mean_memorization']:.3g}"
        lines.append(f"{row['id']} {name:<18} {row['count']:>9} {row['fraction']:>7.1%} {md:>9} {mm:>8}")
    weights = summary.get("weights")
    if weights:
        lines.append(
            f"kept={weights['num_kept']} removed={weights['num_removed']} "
            f"down-weighted={weights['num_down_weighted']} up-sampled={weights['num_up_sampled']}  "
            f"loss-weight total={weights['loss_weight_total']:.6g}  "
            f"sampling-weight total={weights['sampling_weight_total']:.6g}"
        )
    duplication = summary.get("hotspot_duplication")
    if duplication:
        lines.append(
            f"hotspots={duplication['hotspots']}: exact duplicates={duplication['exact_duplicates']} "
            f"near duplicates={duplication['near_duplicates_only']} unique={duplication['unique']}"
        )
    leakage = summary.get("leakage")
    if leakage:
        from hf_carto.measure.leakage_columns import describe_k

        every = leakage["all"]
        lines.append(
            f"k-extractable rows ({describe_k(leakage['k_range'])}): {every['extractable']} of "
            f"{every['tested']} tested; "
            f"mean loss under the model {every['mean_loss']:.4g}"
        )
    return "\n".join(lines)
