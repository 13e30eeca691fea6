"""What a mapping run shows in the trackers people watch (TensorBoard).

During training (:class:`hf_carto.CartographyCallback`, or a recording Trainer, with
``report_to`` naming ``"tensorboard"``), every completed snapshot logs, at its optimizer step:

- ``carto/loss``: the histogram of the snapshot's per-sample losses, and ``carto/loss_mean``;
- ``carto/forget_fraction``: the fraction of samples with at least one forget event so far, with
  ``eps`` resolved on the losses recorded so far (``carto/eps``; 0 before the second snapshot).

After scoring, :func:`log_cartography` logs the quadrant counts (``carto/quadrant/<name>``), the
thresholds (``carto/tau_d``, ``carto/tau_m``, ``carto/eps``) and the data map as an image
(``carto/data_map``). Events go to ``<logging folder>/carto``: ``$TENSORBOARD_LOGGING_DIR`` when
set (as the Trainer's own TensorBoard callback does), else ``<output_dir>/runs``; point
TensorBoard at that folder to see the Trainer's curves beside these.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hf_carto.core.columns import DIFFICULTY, MAP_COLUMNS, MEMORIZATION, QUADRANT, Quadrant, read_columns
from hf_carto.core.eps import resolve_eps
from hf_carto.core.kernel import forget_event_counts

if TYPE_CHECKING:
    from hf_carto.record.store import LossStore

__all__ = ["CartographyTracker", "log_cartography", "tracker_log_dir"]

TRACKER_SUBDIR = "carto"


def _report_to(args: Any) -> list[str]:
    value = getattr(args, "report_to", None) or []
    return [value] if isinstance(value, str) else list(value)


def tracker_log_dir(output_dir: str | os.PathLike) -> Path:
    """Where the cartography events of a run with this ``output_dir`` are written."""
    base = os.environ.get("TENSORBOARD_LOGGING_DIR") or os.path.join(output_dir, "runs")
    return Path(base) / TRACKER_SUBDIR


class CartographyTracker:
    """A TensorBoard writer for cartography summaries."""

    def __init__(self, log_dir: str | os.PathLike) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as err:  # tensorboard is an optional dependency
            raise ImportError("logging to TensorBoard needs the tensorboard package: pip install tensorboard") from err
        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(log_dir=str(self.log_dir))

    @classmethod
    def for_training(cls, args: Any) -> CartographyTracker | None:
        """A tracker when the TrainingArguments report to TensorBoard; ``None`` otherwise."""
        if "tensorboard" not in _report_to(args):
            return None
        return cls(tracker_log_dir(args.output_dir))

    def log_snapshot(self, store: LossStore, eps: float | str, *, step: int) -> dict[str, float]:
        """Log the latest snapshot of the recording ``store``; returns what was logged."""
        from hf_carto.record.merge import load_loss_matrix, merged_snapshot

        completed = store.completed()
        ids = merged_snapshot(store, min(completed), store.settings())["sample_id"]
        losses = load_loss_matrix(store, ids, allow_nonfinite=True).losses.astype(np.float64)
        rows = losses[np.isfinite(losses).all(axis=1)]
        latest = losses[:, -1][np.isfinite(losses[:, -1])]
        logged = {"carto/loss_mean": float(latest.mean()) if latest.size else float("nan")}
        if rows.shape[1] >= 2 and rows.shape[0]:
            eps_value = resolve_eps(rows, eps)
            logged["carto/eps"] = eps_value
            logged["carto/forget_fraction"] = float((forget_event_counts(rows, eps_value) > 0).mean())
        else:
            logged["carto/forget_fraction"] = 0.0
        if latest.size:
            self.writer.add_histogram("carto/loss", latest, global_step=step)
        for tag, value in logged.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()
        return logged

    def log_scores(self, dataset: Any, fit: Any, *, step: int = 0, highlight: np.ndarray | None = None) -> dict:
        """Quadrant counts, thresholds and the data-map image of a scored dataset."""
        from hf_carto.core.plots import plot_data_map

        columns = read_columns(dataset, list(MAP_COLUMNS))
        quadrants = columns[QUADRANT].astype(np.int64)
        logged: dict[str, float] = {
            f"carto/quadrant/{quadrant.name.lower()}": float((quadrants == quadrant).sum()) for quadrant in Quadrant
        }
        logged.update(
            {
                "carto/tau_d": float(fit.tau_d),
                "carto/tau_m": float(fit.tau_m),
                "carto/eps": float(fit.eps),
                "carto/num_with_forget_events": float(fit.num_with_forget_events),
            }
        )
        for tag, value in logged.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.add_histogram("carto/difficulty", columns[DIFFICULTY], global_step=step)
        self.writer.add_histogram("carto/memorization", columns[MEMORIZATION], global_step=step)
        import matplotlib.image

        with tempfile.TemporaryDirectory() as tmp:
            path = plot_data_map(
                columns[DIFFICULTY],
                columns[MEMORIZATION],
                quadrants,
                Path(tmp) / "data_map.png",
                tau_d=fit.tau_d,
                tau_m=fit.tau_m,
                num_snapshots=fit.num_snapshots,
                highlight=highlight,
            )
            image = matplotlib.image.imread(path)
        self.writer.add_image("carto/data_map", image[..., :3], global_step=step, dataformats="HWC")
        self.writer.flush()
        return logged

    def close(self) -> None:
        self.writer.close()


def log_cartography(
    dataset: Any,
    fit: Any,
    log_dir: str | os.PathLike,
    *,
    step: int = 0,
    highlight: np.ndarray | None = None,
) -> dict[str, float]:
    """Log a scored dataset to TensorBoard: quadrant counts, thresholds and the data map.

    Args:
        dataset (`datasets.Dataset`): rows scored by :func:`hf_carto.add_cartography`.
        fit (`CartographyFit`): the fit that scored them (:class:`hf_carto.CartographyFit`).
        log_dir (`str`): the event folder, e.g. ``hf_carto.record.trackers.tracker_log_dir(output_dir)``
            to sit beside the mapping run's snapshots.
        step (`int`, *optional*, defaults to `0`): the step the values are logged at.
        highlight (`np.ndarray`, *optional*): a boolean mask circled on the data map.

    Returns:
        `dict`: the scalars logged, by tag.

    Raises:
        ValueError: when the dataset lacks the score columns.
    """
    missing = [c for c in MAP_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset has no {missing} columns; score it first (hf_carto.add_cartography)")
    tracker = CartographyTracker(log_dir)
    try:
        return tracker.log_scores(dataset, fit, step=step, highlight=highlight)
    finally:
        tracker.close()
