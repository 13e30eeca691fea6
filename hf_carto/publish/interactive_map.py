"""The data map as one self-contained HTML page: hover a point to read its sample, filter by quadrant.

The page (``templates/data_map.html``) draws an SVG scatter with a few dozen lines of its own
JavaScript; the data are embedded as JSON. Nothing is fetched from a CDN or anywhere else, so the
file opens offline and can be attached to a report or a dataset repository as it is.

A map is a file people share, so by default it embeds scores only:

- row texts (the ``text_column``, or decoded ``input_ids``) only with ``include_text=True``
  (``--include-text``). A map with texts leaves the canary rows out (their text holds the secrets;
  ``include_canaries=True`` keeps them), so the ``sample_id`` values it lacks are then the canary
  rows'. A map without texts draws every row: nothing in it says which rows are canaries.
- the planted ground truth (the ``truth`` label of each row: the "planted" tooltip line and the
  ``color_by="planted"`` colours) only with ``include_ground_truth=True``
  (``--include-ground-truth``). ``is_canary`` and ``carto_canary_id`` are never embedded.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from hf_carto.core.atomic import write_text_atomic
from hf_carto.core.columns import (
    DIFFICULTY,
    IS_CANARY,
    LEAK_EXTRACTABLE,
    LEAK_LOSS,
    LEAK_MATCHED,
    MAP_COLUMNS,
    MEMORIZATION,
    PLANTED_NAMES,
    QUADRANT,
    SAMPLE_ID,
    TRUTH,
    Quadrant,
    read_columns,
    score_columns,
)
from hf_carto.core.plots import QUADRANT_COLORS

__all__ = ["write_interactive_map", "COLOR_BY"]

TEMPLATE = importlib.resources.files(__package__) / "templates" / "data_map.html"
COLOR_BY = ("quadrant", "planted")
SNIPPET_CHARS = 200
# What _script_json writes as \uXXXX inside the embedded JSON (see there for why).
_SCRIPT_ESCAPES = {ord(c): f"\\u{ord(c):04x}" for c in "<>&\u2028\u2029"}
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
        # The text as it is (the tooltip keeps its line breaks), cut by code points so that a
        # character outside the BMP is never split in half.
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
    include_text: bool = False,
    include_ground_truth: bool = False,
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
            `truth` label of data built with planted material; needs `include_ground_truth`).
        fit (`CartographyFit`, *optional*): the fit of the scores (:class:`hf_carto.CartographyFit`);
            draws `tau_d` (and `tau_m` when `y` is memorization) as dashed lines.
        text_column (`str`, *optional*, defaults to `"text"`): where hover texts come from when
            `include_text`; when the dataset lacks it, `input_ids` are decoded with `tokenizer` (or
            shown as ids).
        include_text (`bool`, *optional*, defaults to `False`): embed each row's text (its first
            200 characters) in the page, shown on hover. Canary rows are then left out unless
            `include_canaries`.
        include_ground_truth (`bool`, *optional*, defaults to `False`): embed each row's planted
            `truth` label (shown on hover, and needed by `color_by="planted"`).
        include_canaries (`bool`, *optional*, defaults to `False`): with `include_text`, also draw
            the canary rows and their texts (the secrets). Without texts every row is drawn anyway.
        title (`str`, *optional*): the page title.
        seed (`int`, *optional*, defaults to 0): the seed of the memorization jitter.

    Returns:
        `Path`: the file written.

    Raises:
        ValueError: a missing score column, a `y` that is neither memorization nor a detector
            column, an unknown `color_by`, `"planted"` without a `truth` column or without
            `include_ground_truth`, or no row left.
    """
    truth_names = _check_request(dataset, y, color_by, include_ground_truth)
    # Canary rows are withheld for their text alone: a map without texts draws them like any other
    # row, so that the sample_ids it lacks do not point at them.
    canaries = _canary_rows(dataset) if include_text and not include_canaries else np.zeros(len(dataset), bool)
    rows = np.flatnonzero(~canaries)
    if rows.size == 0:
        raise ValueError(f"no row to draw: all {len(dataset)} rows are canaries (pass include_canaries=True)")
    show_truth = include_ground_truth and truth_names is not None
    wanted = [*MAP_COLUMNS, *([y] if y != MEMORIZATION else [])]
    wanted += [SAMPLE_ID] if SAMPLE_ID in dataset.column_names else []
    wanted += [TRUTH] if show_truth else []
    leak = [c for c in (LEAK_EXTRACTABLE, LEAK_MATCHED, LEAK_LOSS) if c in dataset.column_names]
    wanted += leak
    cols = {k: v[rows] for k, v in read_columns(dataset, wanted).items()}
    ids = cols[SAMPLE_ID] if SAMPLE_ID in cols else rows
    quadrant = cols[QUADRANT].astype(np.int64)
    yv = cols[y].astype(np.float64)
    y_plot = _jittered(yv, fit, seed) if y == MEMORIZATION else yv
    quadrant_names = Quadrant.names()
    if color_by == "quadrant":
        groups = [{"name": name, "color": QUADRANT_COLORS[q]} for q, name in enumerate(quadrant_names)]
        group = quadrant
    else:
        groups = [
            {"name": name, "color": PLANTED_COLORS[k % len(PLANTED_COLORS)]} for k, name in enumerate(truth_names)
        ]
        group = cols[TRUTH].astype(np.int64)
    scores = _hover_scores(cols, y, leak)
    left_out = int(canaries.sum())
    note = f"{rows.size} samples"
    note += f"; {left_out} canary rows left out (their text holds the secrets)" if left_out else ""
    note += ". Hover a point for its sample; the buttons filter by quadrant."
    if not include_text:
        note += " Row texts are not included in this page."
    data = {
        "title": title,
        "note": note,
        "x": _finite_or_none(cols[DIFFICULTY]),
        "y_plot": _finite_or_none(y_plot),
        "x_label": "difficulty d (mean loss over burn-in snapshots)",
        "y_label": "memorization m (forget events / (T - 1), jittered)" if y == MEMORIZATION else y,
        "tau_x": float(fit.tau_d) if fit is not None else None,
        "tau_y": float(fit.tau_m) if fit is not None and y == MEMORIZATION else None,
        "y_floor": 0.0 if y == MEMORIZATION else None,  # the axis starts at 0: no tick reads a negative m
        "sample_id": [int(i) for i in ids],
        "quadrant": quadrant.tolist(),
        "quadrant_names": quadrant_names,
        "group": group.tolist(),
        "groups": groups,
        "planted": [truth_names[k] for k in cols[TRUTH].astype(np.int64)] if show_truth else None,
        "scores": scores,
        "snippet": _snippets(dataset, rows, text_column if text_column in dataset.column_names else None, tokenizer)
        if include_text
        else None,
    }
    page = TEMPLATE.read_text(encoding="utf-8")
    # One pass over both placeholders, so that a title holding "__DATA__" stays a title.
    fill = {"__TITLE__": _html_escape(title), "__DATA__": _script_json(data)}
    page = re.sub("__TITLE__|__DATA__", lambda match: fill[match.group(0)], page)

    return write_text_atomic(page, path)


def _check_request(dataset: Any, y: str, color_by: str, include_ground_truth: bool) -> list[str] | None:
    """Refuse a map the dataset cannot draw, before anything is read; the planted label names (or
    None) otherwise."""
    missing = [c for c in MAP_COLUMNS if c not in dataset.column_names]
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
    if color_by == "planted" and not include_ground_truth:
        raise ValueError(
            "color_by='planted' embeds every row's planted label in the page; pass include_ground_truth=True "
            "(--include-ground-truth) to draw it"
        )
    return truth_names


def _jittered(m: np.ndarray, fit: Any, seed: int) -> np.ndarray:
    """Memorization is discrete: each point moves by up to a third of one step, as in the PNG."""
    steps = fit.num_snapshots - 1 if fit is not None and fit.num_snapshots > 1 else 20
    jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, size=m.size) / steps
    # m lives in [0, 1]: a jitter that would carry a point past either end goes inward instead,
    # so that no point reads as a memorization below 0 or above 1.
    jitter = np.where((m + jitter < 0) | (m + jitter > 1), -jitter, jitter)
    return m + jitter


def _hover_scores(cols: dict[str, np.ndarray], y: str, leak: list[str]) -> dict[str, list]:
    """What a point's tooltip shows: its scores, and its own leakage evidence when there is any."""
    scores = {"difficulty": _finite_or_none(cols[DIFFICULTY]), "memorization": _finite_or_none(cols[MEMORIZATION])}
    if y != MEMORIZATION:
        scores[y] = _finite_or_none(cols[y].astype(np.float64))
    for name in leak:
        values = cols[name]
        # A yes/no column travels as JSON true/false, so that the tooltip says so rather than 1.000.
        scores[name] = values.tolist() if values.dtype == np.bool_ else _finite_or_none(values.astype(np.float64))
    return scores


def _script_json(data: Any) -> str:
    """``data`` as JSON that can sit inside a ``<script>`` element whatever its strings hold.

    The HTML parser reads a script's text before JSON does: ``</script`` ends it, and ``<!--``
    followed by ``<script`` makes it swallow the rest of the page, which then draws nothing. JSON
    allows any character in a string to be written as ``\\uXXXX``, so ``<``, ``>`` and ``&`` (which
    appear in JSON only inside strings) are written that way and the parser never sees markup. U+2028
    and U+2029 end a line in JavaScript source before ES2019: escaped too, so the block stays valid
    if it is ever pasted into a script.
    """
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.translate(_SCRIPT_ESCAPES)


def _html_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
