"""hf_carto: Generative Data Cartography for language-model training data.

Score every training sample by difficulty (mean early loss) and memorization (how often it is
forgotten after being fitted), split samples into four quadrants, and label them with the
interventions that reduce leakage: down-weight hotspots, up-sample hard samples, remove outliers.
"""

from .canaries import Canary, insert_canaries_dataset, load_registry, make_canaries, mark_canary_blocks, save_registry
from .continuation import arm_budget, build_arms, continue_from_checkpoint
from .curation import (
    CartographyFit,
    add_cartography,
    apply_interventions,
    cartography_summary,
    fit_cartography,
    format_summary,
    loss_columns,
)
from .evaluation import canary_extraction, contamination_recall, exposure, perplexity
from .hub import export_hub_layout, push_curated_dataset, push_model, render_model_card
from .losses import per_sample_loss, token_nll
from .membership import membership_metrics, membership_signals, roc_auc, tpr_at_fpr
from .merge import LossMatrix, add_loss_columns, load_loss_matrix
from .recording import LossRecorder, LossStore, RecordingSettings
from .recording_trainer import LossRecordingMixin, RecordingConfig, RecordingTrainer
from .report import evaluate_model, plot_tradeoffs
from .scores import (
    BudgetSelection,
    Quadrant,
    QuadrantAssignment,
    TrainingDynamics,
    assign_quadrants,
    difficulty,
    forget_events,
    memorization,
    resolve_eps,
    select_top_memorized,
    training_dynamics,
)
from .trainer import CartoTrainer, WeightedEpochSampler, prepare_curated_dataset

__version__ = "0.1.0"

__all__ = [
    "BudgetSelection",
    "Canary",
    "canary_extraction",
    "contamination_recall",
    "evaluate_model",
    "export_hub_layout",
    "push_curated_dataset",
    "push_model",
    "render_model_card",
    "exposure",
    "insert_canaries_dataset",
    "load_registry",
    "make_canaries",
    "mark_canary_blocks",
    "membership_metrics",
    "membership_signals",
    "perplexity",
    "plot_tradeoffs",
    "roc_auc",
    "save_registry",
    "tpr_at_fpr",
    "CartoTrainer",
    "CartographyFit",
    "WeightedEpochSampler",
    "arm_budget",
    "build_arms",
    "continue_from_checkpoint",
    "prepare_curated_dataset",
    "LossMatrix",
    "LossRecorder",
    "LossRecordingMixin",
    "LossStore",
    "RecordingConfig",
    "RecordingSettings",
    "RecordingTrainer",
    "add_loss_columns",
    "load_loss_matrix",
    "per_sample_loss",
    "token_nll",
    "Quadrant",
    "QuadrantAssignment",
    "TrainingDynamics",
    "add_cartography",
    "apply_interventions",
    "assign_quadrants",
    "cartography_summary",
    "difficulty",
    "fit_cartography",
    "forget_events",
    "format_summary",
    "loss_columns",
    "memorization",
    "resolve_eps",
    "select_top_memorized",
    "training_dynamics",
]
