"""Pictures of a cartography run. Matplotlib runs headless (Agg); every function writes a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hf_carto.core.columns import Quadrant

__all__ = ["new_figure", "save_figure", "plot_data_map", "plot_precision_recall", "plot_sensitivity"]

QUADRANT_COLORS = ["#4c72b0", "#dd8452", "#c44e52", "#8172b3"]


def new_figure(figsize: tuple[float, float], nrows: int = 1, ncols: int = 1, **grid):
    """A headless (Agg) matplotlib figure and its axes (one, or an ``nrows`` x ``ncols`` array with
    ``grid`` passed on to ``plt.subplots``, e.g. ``sharex=True``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, figsize=figsize, dpi=120, **grid)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG (creating the folder) and release the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_data_map(
    difficulty: np.ndarray,
    memorization: np.ndarray,
    quadrants: np.ndarray,
    path: str | Path,
    *,
    tau_d: float | None = None,
    tau_m: float | None = None,
    num_snapshots: int | None = None,
    highlight: np.ndarray | None = None,
    highlight_label: str = "highlighted",
    title: str = "Data map",
    seed: int = 0,
) -> Path:
    """Scatter difficulty (x) against memorization (y), coloured by quadrant, with the thresholds.

    Memorization takes at most ``T`` distinct values, so points get a small vertical jitter
    (a fraction of one step ``1 / (T - 1)``) to show how many samples share a value; the
    thresholds are drawn at their exact values. ``highlight`` (a boolean mask, e.g. planted
    canaries) circles those samples.
    """
    d = np.asarray(difficulty, dtype=np.float64)
    m = np.asarray(memorization, dtype=np.float64)
    q = np.asarray(quadrants, dtype=np.int64)
    step = 1.0 / (num_snapshots - 1) if num_snapshots and num_snapshots > 1 else 0.05
    jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, size=m.size) * step
    # m lives in [0, 1]: a jitter that would carry a point past either end goes inward instead.
    jitter = np.where((m + jitter < 0) | (m + jitter > 1), -jitter, jitter)
    fig, ax = new_figure((7, 5))
    for quad in Quadrant:
        sel = q == quad
        ax.scatter(
            d[sel],
            m[sel] + jitter[sel],
            s=6,
            alpha=0.5,
            color=QUADRANT_COLORS[quad],
            label=f"{quad.name.lower()} ({int(sel.sum())})",
            linewidths=0,
        )
    if highlight is not None:
        hl = np.asarray(highlight, dtype=bool)
        ax.scatter(
            d[hl],
            m[hl] + jitter[hl],
            s=30,
            facecolors="none",
            edgecolors="black",
            linewidths=0.7,
            label=f"{highlight_label} ({int(hl.sum())})",
        )
    if tau_d is not None:
        ax.axvline(tau_d, color="grey", linestyle="--", linewidth=1)
    if tau_m is not None:
        ax.axhline(tau_m, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("difficulty d (mean loss over burn-in snapshots)")
    ax.set_ylabel("memorization m (forget events / (T - 1), jittered)")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8, markerscale=2)
    return save_figure(fig, path)


def plot_precision_recall(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    *,
    base_rate: float | None = None,
    average_precision: dict[str, float] | None = None,
    budgets: tuple[float, ...] = (),
    title: str = "Detection of planted blocks",
) -> Path:
    """Precision against recall of each detector's ranking (``{name: (precision, recall)}`` over
    every cut ``k = 1..N``), the base rate as a dashed line (a random ranking's level) and, for each
    budget fraction in ``budgets``, a marker where the ranking cuts it."""
    fig, ax = new_figure((6.5, 5))
    for name, (precision, recall) in curves.items():
        precision, recall = np.asarray(precision), np.asarray(recall)
        label = name if not average_precision else f"{name} (AP {average_precision[name]:.2f})"
        (line,) = ax.plot(recall, precision, linewidth=1.2, label=label)
        for fraction in budgets:
            k = int(np.floor(fraction * precision.size + 0.5))
            if k:
                ax.plot(recall[k - 1], precision[k - 1], marker="o", markersize=4, color=line.get_color())
    if base_rate is not None:
        ax.axhline(base_rate, color="grey", linestyle="--", linewidth=1, label=f"base rate {base_rate:.3f}")
    ax.set_xlabel("recall" + (" (dots: budget cuts)" if budgets else ""))
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_sensitivity(rows: list[dict], path: str | Path, *, title: str = "Memorization: sensitivity") -> Path:
    """Rows of :func:`hf_carto.memorization_sensitivity`: samples with a forget event (left) and
    memorization's average precision (right) against the eps quantile, one line per snapshot
    density (solid: with the difficulty tie-break; dotted: m alone)."""
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=120)
    for density in sorted({r["snapshots_per_epoch"] for r in rows}, reverse=True):
        chosen = sorted((r for r in rows if r["snapshots_per_epoch"] == density), key=lambda r: r["quantile"])
        q = [r["quantile"] for r in chosen]
        label = f"{density} snapshot(s) per epoch"
        left.plot(q, [r["num_with_forget_events"] for r in chosen], marker="o", label=label)
        (line,) = right.plot(q, [r["average_precision"] for r in chosen], marker="o", label=label)
        right.plot(q, [r["average_precision_m_alone"] for r in chosen], linestyle=":", color=line.get_color())
    left.set_xlabel("eps quantile of all recorded losses")
    left.set_ylabel("samples with a forget event")
    right.set_xlabel("eps quantile of all recorded losses")
    right.set_ylabel("average precision (dotted: m alone)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    return save_figure(fig, path)
