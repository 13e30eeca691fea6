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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .callback import CartographyCallback, ensure_sample_ids
    from .canaries import (
        Canary,
        canary_id_column,
        insert_canaries_dataset,
        load_registry,
        make_canaries,
        mark_canary_blocks,
        save_registry,
    )
    from .continuation import Arms, arm_budget, build_arms, build_detector_arms, continue_from_checkpoint
    from .curation import (
        CartographyFit,
        add_cartography,
        apply_interventions,
        cartography_summary,
        fit_cartography,
        format_summary,
        loss_columns,
    )
    from .detection import (
        average_precision,
        dataset_detection_quality,
        detection_quality,
        memorization_sensitivity,
        memorization_tie_breaks,
        planted_targets,
        precision_recall_at,
        precision_recall_curve,
    )
    from .detectors import (
        DETECTORS,
        Detector,
        add_detector_scores,
        decided_by_tie_break,
        detector_scores,
        top_budget,
    )
    from .duplicates import add_duplicate_columns, duplicate_clusters, hotspot_duplication
    from .evaluation import canary_extraction, contamination_recall, exposure, exposure_rank, perplexity
    from .hub import export_hub_layout, push_curated_dataset, push_model, render_model_card
    from .interactive_map import write_interactive_map
    from .io import load_scored, save_scored
    from .leakage_columns import add_leakage_columns, leakage_evidence, leakage_summary
    from .losses import per_sample_loss, token_nll
    from .membership import membership_metrics, membership_signals, roc_auc, tpr_at_fpr
    from .merge import LossMatrix, add_loss_columns, load_loss_matrix
    from .models import tiny_gpt2
    from .policy import PAPER, RECOMMENDED, CurationPolicy, curate
    from .recording import LossRecorder, LossStore, RecordingSettings
    from .recording_trainer import LossRecordingMixin, RecordingConfig, RecordingTrainer
    from .report import EvalSettings, LeakageProbes, evaluate_leakage, evaluate_model, plot_tradeoffs
    from .scores import (
        BudgetSelection,
        Quadrant,
        QuadrantAssignment,
        TrainingDynamics,
        assign_quadrants,
        difficulty,
        forget_event_counts,
        forget_events,
        memorization,
        never_learned,
        planted_vs_quadrant,
        resolve_eps,
        select_top_memorized,
        training_dynamics,
    )
    from .sft import CartoSFTTrainer  # noqa: F401  (optional: not in __all__)
    from .tokenization import train_bpe_tokenizer
    from .trackers import log_cartography
    from .trainer import CartoTrainer, WeightedEpochSampler, prepare_curated_dataset

__version__ = "0.1.0"

#: Submodule -> the public names it defines.
_SUBMODULE_NAMES: dict[str, tuple[str, ...]] = {
    "callback": ("CartographyCallback", "ensure_sample_ids"),
    "canaries": (
        "Canary",
        "canary_id_column",
        "insert_canaries_dataset",
        "load_registry",
        "make_canaries",
        "mark_canary_blocks",
        "save_registry",
    ),
    "continuation": ("Arms", "arm_budget", "build_arms", "build_detector_arms", "continue_from_checkpoint"),
    "curation": (
        "CartographyFit",
        "add_cartography",
        "apply_interventions",
        "cartography_summary",
        "fit_cartography",
        "format_summary",
        "loss_columns",
    ),
    "detection": (
        "average_precision",
        "dataset_detection_quality",
        "detection_quality",
        "memorization_sensitivity",
        "memorization_tie_breaks",
        "planted_targets",
        "precision_recall_at",
        "precision_recall_curve",
    ),
    "detectors": (
        "DETECTORS",
        "Detector",
        "add_detector_scores",
        "decided_by_tie_break",
        "detector_scores",
        "top_budget",
    ),
    "duplicates": ("add_duplicate_columns", "duplicate_clusters", "hotspot_duplication"),
    "evaluation": ("canary_extraction", "contamination_recall", "exposure", "exposure_rank", "perplexity"),
    "hub": ("export_hub_layout", "push_curated_dataset", "push_model", "render_model_card"),
    "interactive_map": ("write_interactive_map",),
    "io": ("load_scored", "save_scored"),
    "leakage_columns": ("add_leakage_columns", "leakage_evidence", "leakage_summary"),
    "losses": ("per_sample_loss", "token_nll"),
    "membership": ("membership_metrics", "membership_signals", "roc_auc", "tpr_at_fpr"),
    "merge": ("LossMatrix", "add_loss_columns", "load_loss_matrix"),
    "policy": ("CurationPolicy", "PAPER", "RECOMMENDED", "curate"),
    "recording": ("LossRecorder", "LossStore", "RecordingSettings"),
    "recording_trainer": ("LossRecordingMixin", "RecordingConfig", "RecordingTrainer"),
    "report": ("EvalSettings", "LeakageProbes", "evaluate_leakage", "evaluate_model", "plot_tradeoffs"),
    "scores": (
        "BudgetSelection",
        "Quadrant",
        "QuadrantAssignment",
        "TrainingDynamics",
        "assign_quadrants",
        "difficulty",
        "forget_event_counts",
        "forget_events",
        "memorization",
        "never_learned",
        "planted_vs_quadrant",
        "resolve_eps",
        "select_top_memorized",
        "training_dynamics",
    ),
    "tokenization": ("train_bpe_tokenizer",),
    "trackers": ("log_cartography",),
    "models": ("tiny_gpt2",),
    "trainer": ("CartoTrainer", "WeightedEpochSampler", "prepare_curated_dataset"),
}
_NAME_TO_SUBMODULE = {name: module for module, names in _SUBMODULE_NAMES.items() for name in names}

#: Public names whose module needs an optional extra: name -> (submodule, extra). They resolve like
#: the others but stay out of ``__all__``, so ``from hf_carto import *`` works without the extra.
_OPTIONAL_NAMES: dict[str, tuple[str, str]] = {"CartoSFTTrainer": ("sft", "sft")}

# Spelled out (not derived from the table above) so that linters and readers see the public names;
# tests/test_packaging.py checks that the two agree.
__all__ = [
    "CartographyCallback",
    "ensure_sample_ids",
    "Canary",
    "canary_id_column",
    "insert_canaries_dataset",
    "load_registry",
    "make_canaries",
    "mark_canary_blocks",
    "save_registry",
    "Arms",
    "arm_budget",
    "build_arms",
    "build_detector_arms",
    "continue_from_checkpoint",
    "CartographyFit",
    "add_cartography",
    "apply_interventions",
    "cartography_summary",
    "fit_cartography",
    "format_summary",
    "loss_columns",
    "average_precision",
    "dataset_detection_quality",
    "detection_quality",
    "memorization_sensitivity",
    "memorization_tie_breaks",
    "planted_targets",
    "precision_recall_at",
    "precision_recall_curve",
    "DETECTORS",
    "Detector",
    "add_detector_scores",
    "decided_by_tie_break",
    "detector_scores",
    "top_budget",
    "add_duplicate_columns",
    "duplicate_clusters",
    "hotspot_duplication",
    "add_leakage_columns",
    "leakage_evidence",
    "leakage_summary",
    "canary_extraction",
    "contamination_recall",
    "exposure",
    "exposure_rank",
    "perplexity",
    "export_hub_layout",
    "push_curated_dataset",
    "push_model",
    "render_model_card",
    "write_interactive_map",
    "load_scored",
    "save_scored",
    "per_sample_loss",
    "token_nll",
    "membership_metrics",
    "membership_signals",
    "roc_auc",
    "tpr_at_fpr",
    "LossMatrix",
    "add_loss_columns",
    "load_loss_matrix",
    "LossRecorder",
    "LossStore",
    "RecordingSettings",
    "LossRecordingMixin",
    "RecordingConfig",
    "RecordingTrainer",
    "EvalSettings",
    "LeakageProbes",
    "evaluate_leakage",
    "evaluate_model",
    "plot_tradeoffs",
    "CurationPolicy",
    "PAPER",
    "RECOMMENDED",
    "curate",
    "BudgetSelection",
    "Quadrant",
    "QuadrantAssignment",
    "TrainingDynamics",
    "assign_quadrants",
    "difficulty",
    "forget_event_counts",
    "forget_events",
    "memorization",
    "never_learned",
    "planted_vs_quadrant",
    "resolve_eps",
    "select_top_memorized",
    "training_dynamics",
    "train_bpe_tokenizer",
    "log_cartography",
    "tiny_gpt2",
    "CartoTrainer",
    "WeightedEpochSampler",
    "prepare_curated_dataset",
]


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
