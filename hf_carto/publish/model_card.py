"""The model card of a model trained on curated data, filled from ``templates/curated_model.md``."""

from __future__ import annotations

import importlib.resources
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODEL_CARD_TEMPLATE", "render_model_card"]

#: The model card template, shipped inside the package (``hf_carto/publish/templates/``, package data) so
#: that an installed wheel renders cards too: a ``Path`` for a package on disk, a ``Traversable``
#: for one imported from a zip. The repository's ``model_cards/curated_model.md`` is its documented
#: copy; tests/test_packaging.py keeps the two identical.
MODEL_CARD_TEMPLATE = importlib.resources.files(__package__) / "templates" / "curated_model.md"


def _cell(values: Any, fmt: str) -> str:
    """One table cell: a number, or the mean and standard deviation of several seeds."""
    if values is None:
        return "-"
    arr = np.atleast_1d(np.asarray(values, dtype=np.float64))
    if arr.size == 1:
        return format(arr[0], fmt)
    return f"{format(arr.mean(), fmt)} ± {format(arr.std(), fmt)}"


def render_model_card(
    *,
    repo_id: str,
    base_model: str,
    dataset_id: str,
    curation: dict[str, Any],
    results: Sequence[dict[str, Any]],
    k: int = 32,
    conclusion: str = "",
    license: str | None = None,
    template_path: str | os.PathLike | None = None,
) -> str:
    """Fill the model card template for a model trained on curated data.

    Args:
        curation: settings to list (interventions, thresholds, budget...), name -> value.
        results: one dict per arm with `arm` and any of `extraction_success`, `mean_exposure`,
            `contamination_recall`, `mia_auc`, `mia_tpr_at_1pct_fpr`, `perplexity`; each a number or
            a list over seeds.
        conclusion: a sentence stating what the comparison shows, negative results included.
    """
    from huggingface_hub import ModelCard, ModelCardData

    template = Path(template_path) if template_path else MODEL_CARD_TEMPLATE
    if not template.is_file():
        raise FileNotFoundError(f"model card template {template} not found; pass template_path")
    seeds = max((np.atleast_1d(r.get("perplexity", [0])).size for r in results), default=1)
    rows = [
        {
            "arm": r["arm"],
            "extraction": _cell(r.get("extraction_success"), ".1%"),
            "exposure": _cell(r.get("mean_exposure"), ".2f"),
            "contamination": _cell(r.get("contamination_recall"), ".1%"),
            "auc": _cell(r.get("mia_auc"), ".3f"),
            "tpr": _cell(r.get("mia_tpr_at_1pct_fpr"), ".3f"),
            "perplexity": _cell(r.get("perplexity"), ".2f"),
        }
        for r in results
    ]
    card_data = ModelCardData(
        base_model=base_model,
        datasets=[dataset_id],
        license=license,
        library_name="transformers",
        tags=["data-cartography", "memorization", "hf-carto"],
        pipeline_tag="text-generation",
    )
    with importlib.resources.as_file(template) as template_file:  # a real file, even from a zip
        card = ModelCard.from_template(
            card_data,
            template_path=str(template_file),
            model_name=repo_id.split("/")[-1],
            repo_id=repo_id,
            base_model=base_model,
            dataset_id=dataset_id,
            dataset_url=f"https://huggingface.co/datasets/{dataset_id}",
            curation=list(curation.items()),
            results=rows,
            num_seeds=seeds,
            k=k,
            conclusion=conclusion,
        )
    return str(card)
