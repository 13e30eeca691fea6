"""The data map as one self-contained HTML page: hover a point to read its sample, filter by quadrant.

The page (``templates/data_map.html``) draws an SVG scatter with a few dozen lines of its own
JavaScript; the data are embedded as JSON. Nothing is fetched from a CDN or anywhere else, so the
file opens offline and can be attached to a report or a dataset repository as it is.

Canary rows are left out unless asked for: their text holds the secrets (``is_canary``, or a
``truth`` label ``canary``).
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from .columns import (
    DIFFICULTY,
    IS_CANARY,
    LEAK_EXTRACTABLE,
    LEAK_LOSS,
    LEAK_MATCHED,
    MEMORIZATION,
    PLANTED_NAMES,
    QUADRANT,
    SAMPLE_ID,
    TRUTH,
    read_columns,
    score_columns,
)

__all__ = ["write_interactive_map", "COLOR_BY"]

TEMPLATE = importlib.resources.files(__package__) / "templates" / "data_map.html"
COLOR_BY = ("quadrant", "planted")
SNIPPET_CHARS = 200
PLANTED_COLORS = ["#9aa5b1", "#2a9d8f", "#e63946", "#f4a261", "#6a4c93", "#264653", "#e9c46a"]


def _finite_or_none(values: np.ndarray) -> list[float | None]:
    """JSON has no NaN: non-finite scores travel as null (drawn nowhere, shown as '-')."""
    return [float(v) if math.isfinite(v) else None for v in np.asarray(values, dtype=np.float64).tolist()]


def _canary_rows(dataset: Any) -> np.ndarray:
    rows = np.zeros(len(dataset), dtype=bool)
    if IS_CANARY in dataset.column_names:
        rows |= read_columns(dataset, [IS_CANARY])[IS_CANARY].astype(bool)
    names = _truth_names(dataset)
    if names is not None and "canary" in names:
        rows |= read_columns(dataset, [TRUTH])[TRUTH] == names.index("canary")
    return rows


def _truth_names(dataset: Any) -> list[str] | None:
    if TRUTH not in dataset.column_names:
        return None
    return list(getattr(dataset.features[TRUTH], "names", None) or PLANTED_NAMES)


def _snippets(dataset: Any, rows: np.ndarray, text_column: str | None, tokenizer: Any) -> list[str]:
    def cut(text: str) -> str:
        text = " ".join(text.split())
        return text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1] + "…"

    if text_column is not None:
        return [cut(str(dataset[int(i)][text_column])) for i in rows]
    if "input_ids" in dataset.column_names:
        ids = dataset.select(rows.tolist())["input_ids"] if rows.size else []
        if tokenizer is not None:
            return [cut(tokenizer.decode(block)) for block in ids]
        return [cut("token ids: " + " ".join(map(str, block))) for block in ids]
    return [""] * rows.size


def write_interactive_map(
    dataset: Any,
    path: str | os.PathLike,
    *,
    y: str = MEMORIZATION,
    color_by: str = "quadrant",
    fit: Any = None,
    text_column: str | None = "text",
    tokenizer: Any = None,
    include_canaries: bool = False,
    title: str = "Data map",
    seed: int = 0,
) -> Path:
    """Write the interactive data map of a scored dataset to ``path`` (one HTML file).

    Args:
        dataset (`datasets.Dataset`): rows scored by :func:`hf_carto.add_cartography`.
        path (`str`): the `.html` file to write.
        y (`str`, *optional*, defaults to `"carto_memorization"`): the vertical axis:
            memorization or any detector column `carto_score_<name>`. The horizontal axis is
            difficulty.
        color_by (`str`, *optional*, defaults to `"quadrant"`): `"quadrant"`, or `"planted"` (the
            `truth` label of data built with planted material).
        fit (:class:`hf_carto.CartographyFit`, *optional*): draws `tau_d` (and `tau_m` when `y`
            is memorization) as dashed lines.
        text_column (`str`, *optional*, defaults to `"text"`): where hover snippets come from; when
            the dataset lacks it, `input_ids` are decoded with `tokenizer` (or shown as ids).
        include_canaries (`bool`, *optional*, defaults to `False`): also draw canary rows.
        title (`str`, *optional*): the page title.

    Returns:
        `Path`: the file written.

    Raises:
        ValueError: a missing score column, a `y` that is neither memorization nor a detector
            column, an unknown `color_by`, `"planted"` without a `truth` column, or no row left.
    """
    missing = [c for c in (DIFFICULTY, MEMORIZATION, QUADRANT) if c not in dataset.column_names]
    if missing:
        raise ValueError(f"the dataset has no {missing} columns; score it first (hf_carto.add_cartography)")
    detectors = score_columns(dataset.column_names)
    if y != MEMORIZATION and y not in detectors.values():
        raise ValueError(f"y must be {MEMORIZATION!r} or a detector column {sorted(detectors.values())}; got {y!r}")
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {COLOR_BY}; got {color_by!r}")
    truth_names = _truth_names(dataset)
    if color_by == "planted" and truth_names is None:
        raise ValueError(f"color_by='planted' needs a '{TRUTH}' column; this dataset has none")

    canaries = _canary_rows(dataset)
    rows = np.arange(len(dataset)) if include_canaries else np.flatnonzero(~canaries)
    if rows.size == 0:
        raise ValueError(f"no row to draw: all {len(dataset)} rows are canaries (pass include_canaries=True)")
    wanted = [DIFFICULTY, MEMORIZATION, QUADRANT, *([y] if y != MEMORIZATION else [])]
    wanted += [SAMPLE_ID] if SAMPLE_ID in dataset.column_names else []
    wanted += [TRUTH] if truth_names is not None else []
    leak = [c for c in (LEAK_EXTRACTABLE, LEAK_MATCHED, LEAK_LOSS) if c in dataset.column_names]
    wanted += leak
    cols = {k: v[rows] for k, v in read_columns(dataset, wanted).items()}
    ids = cols[SAMPLE_ID] if SAMPLE_ID in cols else rows
    quadrant = cols[QUADRANT].astype(np.int64)
    yv = cols[y].astype(np.float64)
    y_plot = yv
    if y == MEMORIZATION:  # m is discrete: jitter within a third of one step, as the PNG does
        steps = fit.num_snapshots - 1 if fit is not None and fit.num_snapshots > 1 else 20
        y_plot = yv + np.random.default_rng(seed).uniform(-0.3, 0.3, size=yv.size) / steps

    from .plots import QUADRANT_COLORS
    from .scores import Quadrant

    quadrant_names = [q.name.lower() for q in Quadrant]
    if color_by == "quadrant":
        groups = [{"name": name, "color": QUADRANT_COLORS[q]} for q, name in enumerate(quadrant_names)]
        group = quadrant
    else:
        groups = [
            {"name": name, "color": PLANTED_COLORS[k % len(PLANTED_COLORS)]} for k, name in enumerate(truth_names)
        ]
        group = cols[TRUTH].astype(np.int64)
    scores = {"difficulty": _finite_or_none(cols[DIFFICULTY]), "memorization": _finite_or_none(cols[MEMORIZATION])}
    if y != MEMORIZATION:
        scores[y] = _finite_or_none(yv)
    for name in leak:  # the row's own leakage evidence, when the dataset carries it
        scores[name] = _finite_or_none(cols[name].astype(np.float64))
    left_out = int(canaries.sum()) if not include_canaries else 0
    note = f"{rows.size} samples"
    note += f"; {left_out} canary rows left out" if left_out else ""
    note += ". Hover a point for its sample; the buttons filter by quadrant."
    data = {
        "title": title,
        "note": note,
        "x": _finite_or_none(cols[DIFFICULTY]),
        "y_plot": _finite_or_none(y_plot),
        "x_label": "difficulty d (mean loss over burn-in snapshots)",
        "y_label": "memorization m (forget events / (T - 1), jittered)" if y == MEMORIZATION else y,
        "tau_x": float(fit.tau_d) if fit is not None else None,
        "tau_y": float(fit.tau_m) if fit is not None and y == MEMORIZATION else None,
        "sample_id": [int(i) for i in ids],
        "quadrant": quadrant.tolist(),
        "quadrant_names": quadrant_names,
        "group": group.tolist(),
        "groups": groups,
        "planted": [truth_names[k] for k in cols[TRUTH].astype(np.int64)] if truth_names is not None else None,
        "scores": scores,
        "snippet": _snippets(dataset, rows, text_column if text_column in dataset.column_names else None, tokenizer),
    }
    # "</" inside the JSON could close the script element early; "<\/" means the same in JSON.
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    page = TEMPLATE.read_text(encoding="utf-8")
    page = page.replace("__TITLE__", _html_escape(title)).replace("__DATA__", payload)
    from .atomic import write_text_atomic

    return write_text_atomic(page, path)


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
