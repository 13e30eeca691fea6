"""Defaults for the experiment: the common training defaults, one CPU base, and presets as small diffs.

Presets are defaults, not settings: a flag given on the command line always wins. Each preset is
written as what it changes relative to :data:`CPU_BASE`, so the difference between the demo, the
WikiText-2 run and the test preset can be read at a glance.
"""

from __future__ import annotations

from typing import Any

GENERATED = "generated"  # --dataset_name value for the embedded generated corpus

# Defaults of every run, preset or not.
COMMON: dict[str, Any] = dict(
    output_dir="outputs/gpt2_wikitext",
    num_train_epochs=3,
    report_to="none",
    save_strategy="no",
    logging_steps=50,
    per_device_train_batch_size=8,
    per_device_eval_batch_size=16,  # the eval-mode loss snapshots
    learning_rate=5e-4,
    warmup_steps=0.02,
    weight_decay=0.01,
)

# The measured CPU experiments: a 2-layer GPT-2 trained from scratch, at least 32 canaries over a
# range of copy counts, secrets of 10^4 candidates ranked exactly, planted material (canaries,
# contaminating sequences, duplicates) in at most 5% of the 32-token training blocks, so perplexity
# reflects ordinary text.
CPU_BASE: dict[str, Any] = dict(
    config_name="gpt2",
    config_overrides="n_layer=2,n_embd=128,n_head=4",
    tokenizer_name=None,
    use_cpu=True,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    per_device_eval_batch_size=128,
    eps="quantile:0.05",
    license=None,
    block_size=32,
    per_device_train_batch_size=64,
    num_train_epochs=10,
    burn_in=4,
    snapshots_per_epoch=2,
    learning_rate=3e-3,
    logging_steps=100,
    num_canaries=32,
    canary_repetitions=[1, 2, 4, 8, 16],
    secret_length=4,
    num_contaminating=8,
    contamination_repetitions=4,
    contamination_k=8,
    num_membership_samples=300,
    max_validation_samples=400,
    prune_fractions=[0.1],
)

# The paper's regime at CPU scale: pretraining from scratch on the first 512k tokens of
# WikiText-2's training file, 3 epochs with burn-in 1 (as the paper), 4 eval-mode snapshots an
# epoch so that forget events can occur; one seed per invocation (--seeds N, its own
# --output_dir), combined by `hf-carto combine`. Every detector gets a 10% pruning arm beside
# the random one, and the per-quadrant rules (hotspots x0.5) their random control. Dropout
# 0.2 (GPT-2's default is 0.1) keeps the mapping run's validation perplexity within 1.5x its
# training perplexity: 1.43 in the pilot, against 1.53 at 0.1 and 1.75 with a lower learning
# rate (results/gpt2_paper_cpu/pilot/).
_PAPER: dict[str, Any] = dict(
    dataset_name=None,
    config_overrides="n_layer=2,n_embd=128,n_head=4,resid_pdrop=0.2,embd_pdrop=0.2,attn_pdrop=0.2",
    train_tokenizer_vocab_size=4096,
    max_train_samples=16000,
    num_train_epochs=3,
    burn_in=1,
    snapshots_per_epoch=4,
    detectors=[
        "memorization",
        "soft_forgetting",
        "final_loss",
        "min_loss",
        "loss_drop",
        "loss_std",
        "mean_loss",
        "reference_ratio",
    ],
    prune_fractions=[0.1],
    output_dir="outputs/gpt2_paper_cpu",
)

# The detectors of the budget frontier: the paper's m_i, the three best loss-based detectors of the
# cpu-paper table and their rank average.
_FRONTIER = ["memorization", "loss_std", "loss_drop", "reference_ratio", "combined"]

_DIFFS: dict[str, dict[str, Any]] = {
    # The README's main command: the generated corpus, about 9 minutes on 2 cores.
    "cpu-demo": dict(
        dataset_name=GENERATED,
        generated_documents=5500,
        generated_heldout_documents=1500,
        generated_duplicate_groups=2,
        generated_noise_documents=4,
        train_tokenizer_vocab_size=1024,
        output_dir="outputs/gpt2_demo",
    ),
    # A CPU-scale WikiText-2 run: pass --train_file/--validation_file (see the recipe's docstring).
    "cpu-wikitext2": dict(
        dataset_name=None,
        train_tokenizer_vocab_size=4096,
        max_train_samples=7000,
        seeds=[0, 1, 2, 3, 4],
        output_dir="outputs/gpt2_wikitext2_cpu",
    ),
    "cpu-paper": _PAPER,
    # A regime that regurgitates (results/gpt2_leaky_cpu): the cpu-paper model without dropout on
    # twice the text (the first 1.0M tokens of WikiText-2's training file, 32,633 blocks), which
    # keeps the mapping run's validation perplexity within 1.5x its training perplexity (1.47 in
    # pilot L) while the canaries with 64 and 128 copies are extracted (75% and 100% in pilot L).
    # Canaries at 1-128 copies and 8 contaminating sequences x 24 keep the planted blocks at 5% or
    # under. Burn-in 2 of 3 epochs (the paper only asks T_e < T): the arms continue for one epoch,
    # which halves the cost of the 24 arms against burn-in 1, and the detectors see two epochs of
    # losses (four snapshots). The budget frontier: every detector at 1%, 2% and 5% with a random
    # arm at each, the combined detector down-weighted to 0.1 at 5%, deduplication with its random
    # control, the quadrant rules with theirs; the recommended policy is one of the pruning arms.
    "cpu-leaky": {
        **_PAPER,
        "config_overrides": "n_layer=2,n_embd=128,n_head=4,resid_pdrop=0.0,embd_pdrop=0.0,attn_pdrop=0.0",
        "max_train_samples": 32000,
        "burn_in": 2,
        "snapshots_per_epoch": 2,
        "canary_repetitions": [1, 2, 4, 8, 16, 32, 64, 128],
        "contamination_repetitions": 24,
        "detectors": list(_FRONTIER),
        "prune_fractions": [0.02],
        "frontier_fractions": [0.01, 0.05],
        "frontier_detectors": list(_FRONTIER),
        "downweight_fractions": [0.05],
        "downweight_detectors": ["combined"],
        "downweight_alpha": 0.1,
        "dedup_arm": True,
        "row_evidence": False,
        "output_dir": "outputs/gpt2_leaky_cpu",
    },
    # Seconds, for tests: everything runs, nothing is learned.
    "cpu-tiny": dict(
        dataset_name=GENERATED,
        generated_documents=150,
        generated_heldout_documents=150,
        train_tokenizer_vocab_size=300,
        config_overrides="n_layer=1,n_embd=32,n_head=2",
        block_size=64,
        num_train_epochs=3,
        burn_in=1,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        logging_steps=10,
        num_canaries=2,
        canary_repetitions=[2, 4],
        secret_length=3,
        num_contaminating=4,
        contamination_repetitions=2,
        num_membership_samples=20,
        max_validation_samples=20,
        exposure_sample_size=200,
        eval_batch_size=16,
        output_dir="outputs/gpt2_tiny",
    ),
}

PRESETS: dict[str, dict[str, Any]] = {name: {**CPU_BASE, **diff} for name, diff in _DIFFS.items()}
