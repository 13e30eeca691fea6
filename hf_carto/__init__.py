"""hf_carto: Generative Data Cartography for language-model training data.

Score every training sample by difficulty (mean early loss) and memorization (how often it is
forgotten after being fitted), split samples into four quadrants, and label them with the
interventions that reduce leakage: down-weight hotspots, up-sample hard samples, remove outliers.

Public names are imported from their submodules on first use (PEP 562), so that ``import hf_carto``
and ``hf-carto --help`` do not pay for transformers, torch, scipy or matplotlib before a name that
needs them is used; ``from hf_carto import X`` works as usual.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: The public names, each under the stage module that defines it: the one place they are written.
#: Stages follow the data: core -> data -> record -> score -> curation -> measure -> publish.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "core.columns": ("Quadrant", "loss_columns"),
    "core.eps": ("resolve_eps",),
    "core.kernel": ("forget_event_counts",),
    "core.models": ("tiny_gpt2",),
    "data.canaries": (
        "Canary",
        "canary_id_column",
        "insert_canaries_dataset",
        "load_registry",
        "make_canaries",
        "mark_canary_blocks",
        "save_registry",
    ),
    "data.tokenization": ("train_bpe_tokenizer",),
    "record.callback": ("CartographyCallback", "RecordingConfig", "ensure_sample_ids"),
    "record.losses": ("per_sample_loss", "token_nll"),
    "record.merge": ("LossMatrix", "add_loss_columns", "load_loss_matrix"),
    "record.recorder": ("LossRecorder",),
    "record.recording_trainer": ("LossRecordingMixin", "RecordingTrainer"),
    "record.store": ("LossStore", "RecordingSettings"),
    "record.trackers": ("log_cartography",),
    "score.cartography": ("CartographyFit", "add_cartography", "fit_cartography"),
    "score.detectors": (
        "DETECTORS",
        "Detector",
        "add_detector_scores",
        "decided_by_tie_break",
        "detector_scores",
        "top_budget",
    ),
    "score.scored_io": ("load_scored", "save_scored"),
    "score.duplicates": ("add_duplicate_columns", "duplicate_clusters", "hotspot_duplication"),
    "score.scores": (
        "BudgetSelection",
        "QuadrantAssignment",
        "TrainingDynamics",
        "assign_quadrants",
        "difficulty",
        "forget_events",
        "memorization",
        "never_learned",
        "planted_vs_quadrant",
        "select_top_memorized",
        "training_dynamics",
    ),
    "curation.interventions": ("apply_interventions",),
    "curation.arms": ("Arms", "arm_budget", "build_arms", "build_detector_arms", "continue_from_checkpoint"),
    "curation.policy": ("CurationPolicy", "PAPER", "RECOMMENDED", "curate"),
    "curation.weighted_trainer": ("CartoTrainer", "WeightedEpochSampler", "prepare_curated_dataset"),
    "measure.detection_quality": (
        "average_precision",
        "dataset_detection_quality",
        "detection_quality",
        "memorization_sensitivity",
        "memorization_tie_breaks",
        "planted_targets",
        "precision_recall_at",
        "precision_recall_curve",
    ),
    "measure.extraction": ("canary_extraction",),
    "measure.exposure": ("exposure", "exposure_rank"),
    "measure.contamination": ("contamination_recall",),
    "measure.perplexity": ("perplexity",),
    "measure.leakage_columns": ("add_leakage_columns", "leakage_evidence", "leakage_summary"),
    "measure.membership": ("membership_metrics", "membership_signals", "roc_auc", "tpr_at_fpr"),
    "measure.model_report": (
        "EvalSettings",
        "LeakageProbes",
        "evaluate_leakage",
        "evaluate_model",
        "plot_tradeoffs",
    ),
    "publish.summary": ("cartography_summary", "format_summary"),
    "publish.export": ("export_hub_layout",),
    "publish.push": ("push_curated_dataset", "push_model"),
    "publish.model_card": ("render_model_card",),
    "publish.interactive_map": ("write_interactive_map",),
}
_NAME_TO_SUBMODULE = {name: module for module, names in _EXPORTS.items() for name in names}

#: Public names whose module needs an optional extra: name -> (submodule, extra). They resolve like
#: the others but stay out of ``__all__``, so ``from hf_carto import *`` works without the extra.
_OPTIONAL_NAMES: dict[str, tuple[str, str]] = {"CartoSFTTrainer": ("curation.sft", "sft")}

__all__ = sorted(_NAME_TO_SUBMODULE)


def __getattr__(name: str) -> Any:
    module = _NAME_TO_SUBMODULE.get(name)
    if module is None and name in _OPTIONAL_NAMES:
        module, extra = _OPTIONAL_NAMES[name]
        try:
            value = getattr(importlib.import_module(f".{module}", __name__), name)
        except ImportError as err:
            raise ImportError(
                f"hf_carto.{name} needs the '{extra}' extra: pip install 'hf_carto[{extra}]' ({err})"
            ) from err
        globals()[name] = value
        return value
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_OPTIONAL_NAMES))
