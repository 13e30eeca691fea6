"""The forget threshold ``eps``: its spellings, and the number each resolves to on recorded losses.

A sample is fitted while its loss is below ``eps``; the recorder checks a spelling before training
starts, the trackers resolve it on the snapshots recorded so far, and the scores resolve it on the
whole loss matrix, all with these functions. The loss-matrix check lives here too, since resolving
a threshold is the first thing that reads a matrix.
"""

from __future__ import annotations

import math
import re

import numpy as np

__all__ = ["check_loss_matrix", "check_eps", "parse_eps", "eps_from_min", "resolve_eps"]


def _first_ids(rows: np.ndarray, sample_ids: np.ndarray | None, limit: int = 5) -> list[int]:
    rows = np.asarray(rows)[:limit]
    if sample_ids is not None:
        return [int(x) for x in np.asarray(sample_ids)[rows]]
    return [int(x) for x in rows]


def check_loss_matrix(
    losses: np.ndarray, *, min_snapshots: int = 1, sample_ids: np.ndarray | None = None
) -> np.ndarray:
    """Validate a loss matrix and return it as a floating-point ndarray (no copy when possible).

    Args:
        losses (`np.ndarray` of shape `(N, T)`): one row per sample, one column per snapshot.
        min_snapshots (`int`, *optional*, defaults to `1`): smallest acceptable `T`.
        sample_ids (`np.ndarray` of shape `(N,)`, *optional*): used only to name offending rows
            in error messages; row indices are named when it is not given.

    Raises:
        ValueError: on a wrong number of dimensions, an empty matrix, too few snapshots, or
            non-finite values (the message says how many and the first sample ids).
    """
    arr = np.asarray(losses)
    if arr.ndim != 2:
        raise ValueError(f"losses must be a 2-D matrix of shape (N samples, T snapshots); got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    n, t = arr.shape
    if n == 0:
        raise ValueError("losses has no samples (N = 0)")
    if t < min_snapshots:
        raise ValueError(f"losses has T = {t} snapshot(s); at least {min_snapshots} are needed")
    if sample_ids is not None and len(sample_ids) != n:
        raise ValueError(f"sample_ids has {len(sample_ids)} entries for {n} loss rows")
    finite_rows = np.isfinite(arr).all(axis=1)
    if not finite_rows.all():
        bad = np.flatnonzero(~finite_rows)
        label = "sample_ids" if sample_ids is not None else "rows"
        raise ValueError(
            f"losses has non-finite values (NaN or inf) in {bad.size} of {n} samples; "
            f"first {label}: {_first_ids(bad, sample_ids)}"
        )
    return arr


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not math.isfinite(eps):
        raise ValueError(f"eps must be a finite number; got {eps}")
    return eps


_MIN_PLUS = re.compile(r"^min\s*\+\s*(?P<delta>[-+0-9.eE]+)$")
_MIN_TIMES = re.compile(r"^min\s*\*\s*(?:\(\s*1\s*\+\s*(?P<f>[-+0-9.eE]+)\s*\)|(?P<factor>[-+0-9.eE]+))$")


def parse_eps(spec: float | str) -> tuple[str, float]:
    """Parse an ``eps`` policy into ``(kind, parameter)`` without looking at any loss.

    ``kind`` is one of ``"value"``, ``"quantile"``, ``"min_plus"`` or ``"min_times"``; see
    :func:`resolve_eps` for the accepted spellings.
    """
    if isinstance(spec, (int, float, np.integer, np.floating)) and not isinstance(spec, bool):
        return "value", check_eps(spec)
    if not isinstance(spec, str):
        raise ValueError(f"eps must be a number or a string policy; got {spec!r}")
    text = spec.strip().lower()
    try:
        return "value", check_eps(float(text))
    except ValueError:
        pass
    if text.startswith("quantile:"):
        try:
            q = float(text.split(":", 1)[1])
        except ValueError:
            raise ValueError(f"eps policy {spec!r}: expected 'quantile:q' with q a number") from None
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"eps policy {spec!r}: q must be in [0, 1]")
        return "quantile", q
    match = _MIN_PLUS.match(text)
    if match:
        return "min_plus", float(match["delta"])
    match = _MIN_TIMES.match(text)
    if match:
        factor = 1.0 + float(match["f"]) if match["f"] is not None else float(match["factor"])
        return "min_times", factor
    raise ValueError(
        f"unknown eps policy {spec!r}; use a number, 'quantile:q', 'min+delta', 'min*(1+f)' or 'min*factor'"
    )


def eps_from_min(kind: str, parameter: float, smallest_loss: float) -> float:
    """Resolve a ``min_plus`` / ``min_times`` policy given the smallest recorded loss. A zero eps
    is +0.0 whichever signed zero the minimum was (which one a minimum over both returns depends
    on the order it reads them in)."""
    if kind == "min_plus":
        return check_eps(smallest_loss + parameter) + 0.0
    if kind == "min_times":
        return check_eps(smallest_loss * parameter) + 0.0
    raise ValueError(f"eps policy kind {kind!r} is not relative to the minimum loss")


def resolve_eps(losses: np.ndarray, spec: float | str) -> float:
    """Turn an ``eps`` policy into the number used for forget events.

    Args:
        losses (`np.ndarray` of shape `(N, T)`): every recorded loss.
        spec (`float` or `str`): one of
            - a number, used as it is (the paper uses `4.7055` for GPT-2);
            - `"quantile:q"`, the `q`-quantile (numpy's default linear interpolation) of all
              recorded losses, `q` in `[0, 1]`;
            - `"min+delta"`, the smallest recorded loss plus `delta`;
            - `"min*(1+f)"` or `"min*factor"`, the smallest recorded loss times `1 + f` (or times
              `factor`).

    Returns:
        `float`: the resolved threshold. Store it with the results; `spec` alone does not
        reproduce a run whose losses change.

    Example:
        >>> resolve_eps(np.array([[1.0, 2.0], [3.0, 4.0]]), "min+0.5")
        1.5
    """
    kind, parameter = parse_eps(spec)
    if kind == "value":
        return parameter
    arr = check_loss_matrix(losses)
    if kind == "quantile":
        return float(np.quantile(arr, parameter))
    return eps_from_min(kind, parameter, float(arr.min()))
