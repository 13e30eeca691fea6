"""``evaluate`` metric modules shipped with hf_carto, loadable from a local path (no Hub access).

import evaluate
from hf_carto.measure.metrics import metric_path

auc = evaluate.load(metric_path("membership_auc"))
success = evaluate.load(metric_path("extraction_success"))
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["METRICS", "metric_path"]

METRICS = ("membership_auc", "extraction_success")


def metric_path(name: str) -> str:
    """The folder to pass to ``evaluate.load`` for one of :data:`METRICS`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {METRICS}")
    return str(Path(__file__).parent / name)
