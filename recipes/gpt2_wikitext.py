"""Experiment 2 of the paper: GPT-2 on WikiText with injected canaries and contaminating held-out
sequences, Generative Data Cartography, and every comparison arm, evaluated for leakage.

The paper's setup (a GPU and the Hugging Face Hub; GPT-2 small trained from its config with the
GPT-2 tokenizer, WikiText-103, 3 epochs, burn-in 1 epoch, eps = 4.7055, tau_m at the 75th
percentile, hotspots down-weighted by 0.5, two canaries):

    accelerate launch recipes/gpt2_wikitext.py --output_dir outputs/gpt2_wikitext103 --bf16
    accelerate launch --num_processes 8 recipes/gpt2_wikitext.py --output_dir outputs/gpt2_wikitext103 \\
        --bf16 --seeds 0 1 2 --push_to_hub --hub_model_id you/gpt2-curated --hub_dataset_id you/wikitext-curated

On CPU, with no downloads (presets set small models and short runs; any flag still overrides them):

    python recipes/gpt2_wikitext.py --preset cpu-demo                          # generated corpus, ~9 min
    accelerate launch --multi_gpu --num_processes 2 recipes/gpt2_wikitext.py --preset cpu-wikitext2 \\
        --train_file ../shared/data/wikitext-2-raw/wiki.train.raw \\
        --validation_file ../shared/data/wikitext-2-raw/wiki.valid.raw             # seeds 0-4

(On a machine without GPUs, ``--multi_gpu`` gives two gloo processes on the CPU.)

Large corpora: ``--preprocessing_num_workers N`` tokenizes with N processes, ``--max_train_samples``
stops reading once enough blocks are filled, ``--streaming true`` reads the training text as a
``datasets`` stream; the corpus stays in Arrow files throughout; ``--snapshot_rows 0.05`` snapshots
and scores a fixed seeded 5% of the blocks, the others training unchanged in every arm (README,
"Large corpora").

Steps: documents (Hub dataset, text/parquet/json files, or the generated corpus) are tokenized
into Arrow files; canaries (distinct prefixes, random secrets, repeated) and contaminating held-out sequences
are inserted as whole documents; everything is packed into blocks with a stable ``sample_id``. A
mapping run (``RecordingTrainer``) trains ``num_train_epochs`` epochs, records every block's
eval-mode loss ``snapshots_per_epoch`` times an epoch and saves the burn-in checkpoint. The
blocks are scored and split into quadrants; arms continue from the burn-in checkpoint with the
same seed (``no_intervention``; ``gendatacarto`` = the per-quadrant rules, and its ``random``
control with the same treatments on random blocks; for every pruned fraction, the top blocks by
memorization removed and a random control of the same size). The mapping run's final model and
every arm are evaluated: canary extraction and exposure, contamination recall (inserted vs never
inserted held-out sequences), membership inference and validation perplexity.

Outputs in ``output_dir``: ``report.md`` / ``report.json`` (one table, mean and spread over
seeds), ``data_map.png``, ``figure1_extraction_vs_pruned.png``, ``figure2_perplexity_vs_pruned.png``,
``curated/`` (the scored, intervention-labelled dataset, ``save_to_disk``), ``hub/`` (the Hub
layout with its dataset card, canary blocks withheld), ``model_card.md``. ``canaries.json`` holds
the secrets and stays local. A rerun with the same settings resumes where the last one stopped.

A run that cannot work (a setting, an input, data on a Hub that is off or out of reach) is refused
before it trains, with one message and exit status 2, and leaves no folder it created. Under
``accelerate launch``, ``--quiet`` keeps the launcher from adding its own traceback to the message.

This script is the command line; the stages live in :mod:`hf_carto.experiment` (arguments and
presets, run folder, data, training, evaluation, results, outputs), where they can be called one by
one, for example to run the arms and the evaluation around a mapping run of one's own.
"""

from __future__ import annotations

import sys

from hf_carto.experiment import main
from hf_carto.experiment.arguments import run_command_line

if __name__ == "__main__":
    # ``main`` parses the arguments (``--preset`` gives the defaults, every flag wins over it), then
    # runs or resumes the experiment; a refusal prints its message alone and exits with status 2.
    sys.exit(run_command_line(main, sys.argv[1:]))
