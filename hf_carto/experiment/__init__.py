"""The GenDataCarto experiment as a library: arguments and presets, the run folder, and the stages
in the order data flows through them.

- :mod:`.presets`, :mod:`.arguments`: what a run is told, and the checks that refuse what cannot work;
- :mod:`.run_folder`: settings check and resumption, one cached-stage helper, stage times;
- :mod:`.errors`: what a refused run raises (:class:`ExperimentError`, a ``ValueError``, and its kinds);
- :mod:`.stage_data`: documents -> canaries and contamination inserted -> packed blocks;
- :mod:`.eval_sets`: the evaluation sets cut from the held-out text and the blocks;
- :mod:`.stage_training`: the mapping run, scoring, the arms and their continuation;
- :mod:`.stage_evaluation`: every model probed for leakage on the same sets;
- :mod:`.results`: rows, summaries over seeds, paired comparisons, trade-off points;
- :mod:`.report_markdown`: ``report.md``;
- :mod:`.outputs`: figures, curated dataset, Hub layout and cards;
- :mod:`.runner`: all of it as :func:`run_experiment` (what ``recipes/gpt2_wikitext.py`` calls).

Nothing heavy is imported until a stage runs.
"""

from hf_carto.experiment.arguments import (
    CartoArguments,
    DataArguments,
    ModelArguments,
    check_arguments,
    parse_arguments,
)
from hf_carto.experiment.errors import ExperimentError, InputDataError, RunFolderError, SettingsError
from hf_carto.experiment.presets import GENERATED, PRESET_ABOUT, PRESETS
from hf_carto.experiment.runner import evaluate_seed, main, run_experiment, train_seed

__all__ = [
    "GENERATED",
    "PRESETS",
    "PRESET_ABOUT",
    "CartoArguments",
    "DataArguments",
    "ExperimentError",
    "InputDataError",
    "ModelArguments",
    "RunFolderError",
    "SettingsError",
    "check_arguments",
    "evaluate_seed",
    "main",
    "parse_arguments",
    "run_experiment",
    "train_seed",
]
