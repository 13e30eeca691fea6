"""Cartography on a ``datasets.Dataset``: scores and quadrant labels.

The dataset carries one ``carto_loss_{t}`` column per snapshot ``t = 1..T`` (the recorder writes
them). Scoring is two steps, because the quadrant thresholds depend on every sample:

1. :func:`fit_cartography` streams the loss columns in batches (never the other columns), checks
   them, resolves ``eps`` and computes the thresholds ``tau_d`` / ``tau_m``;
2. :func:`add_cartography` applies the fitted :class:`CartographyFit` with a batched
   ``Dataset.map`` (``num_proc`` works), adding ``carto_difficulty``, ``carto_memorization`` and
   ``carto_quadrant``.

Both refuse losses that no cross-entropy produces (:mod:`hf_carto.score.loss_checks`); the
interventions that follow are :func:`hf_carto.curation.interventions.apply_interventions`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value

from hf_carto.core.column_maps import features_with_columns, map_columns
from hf_carto.core.columns import DIFFICULTY, MEMORIZATION, QUADRANT, Quadrant, loss_columns
from hf_carto.core.eps import parse_eps
from hf_carto.core.kernel import difficulty_and_memorization
from hf_carto.score.combined_runs import combined_scores, pooled_eps, run_matrices
from hf_carto.score.loss_checks import (
    as_numpy,
    check_loss_types,
    checked_columns,
    losses_are_clean,
    refused_in_batch,
    stack_losses,
)
from hf_carto.score.scores import assign_quadrants, check_alpha, check_burn_in, never_learned
from hf_carto.score.streamed_fit import streamed_scores

__all__ = ["CartographyFit", "fit_cartography", "add_cartography", "quadrant_feature", "map_features"]

DEFAULT_BATCH_SIZE = 65_536


def quadrant_feature() -> ClassLabel:
    """The ``ClassLabel`` of the ``carto_quadrant`` column: the lower-case quadrant names in id order."""
    return ClassLabel(names=Quadrant.names())


def map_features() -> dict:
    """The types of the map's columns (``MAP_COLUMNS``): scores as float64, the quadrant as its label."""
    return {DIFFICULTY: Value("float64"), MEMORIZATION: Value("float64"), QUADRANT: quadrant_feature()}


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
        arrays = [as_numpy(c) for c in columns]
        if not losses_are_clean(arrays, self.allow_negative):
            losses = stack_losses(arrays)
            # add_cartography checked every row with its sample_id first; this guards a direct map.
            refused = refused_in_batch(losses, self.allow_nonfinite, self.allow_negative)
            if refused:
                raise ValueError(
                    f"a batch of {losses.shape[0]} rows has {refused} in "
                    f"{self.loss_columns[0]}..{self.loss_columns[-1]}; add_cartography names their sample_ids"
                )
            arrays = [losses[:, t] for t in range(losses.shape[1])]
        d, m = difficulty_and_memorization(arrays, self.burn_in, self.eps)
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
    check_loss_types(dataset, columns)
    burn_in = check_burn_in(burn_in, len(columns))
    alpha_d = check_alpha("alpha_d", alpha_d)
    alpha_m = check_alpha("alpha_m", alpha_m)
    kind, parameter = parse_eps(eps)

    scores = streamed_scores(
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


def _run_reader(batch_size: int, allow_negative: bool):
    """Reads one run's loss matrix with the same checks a single run gets."""

    def read(run: Dataset, columns: list[str]) -> np.ndarray:
        check_loss_types(run, columns)
        batches = checked_columns(run, columns, batch_size, False, allow_negative)
        return np.concatenate([stack_losses(batch) for batch in batches])

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
    new = map_features()

    def label(batch, indices):
        return {DIFFICULTY: d[indices], MEMORIZATION: m[indices], QUADRANT: quadrant[indices]}

    return map_columns(runs[0], label, new, batch_size=batch_size, with_indices=True, desc="Scoring (runs)")


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
        check_loss_types(dataset, columns)
        # One streaming pass over the loss columns, so that a refused row is named by its
        # sample_id (the map function sees only the losses) and nothing is labelled before.
        for _ in checked_columns(dataset, columns, batch_size, fit.allow_nonfinite, fit.allow_negative):
            pass
    new = map_features()
    options = dict(
        batched=True,
        batch_size=batch_size,
        input_columns=list(fit.loss_columns),
        num_proc=num_proc,
        desc="Scoring (difficulty, memorization, quadrant)",
        writer_batch_size=batch_size,  # datasets' default (1,000 rows a write) costs more than the scoring
    )
    if dataset._indices is not None:  # a shuffled or filtered view: map it whole, as datasets does
        return dataset.map(fit, features=features_with_columns(dataset, new), **options)
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
