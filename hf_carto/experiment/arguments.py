"""The experiment's arguments (three dataclasses beside ``transformers.TrainingArguments``), their
parsing with presets, and the checks that refuse a run that cannot work before any training step."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path

from .presets import COMMON, GENERATED, PRESETS


@dataclass
class ModelArguments:
    config_name: str = field(
        default="gpt2",
        metadata={"help": "Config to train from scratch: 'gpt2' (GPT-2 small, built locally) or a Hub id / folder."},
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated config changes, e.g. 'n_layer=2,n_embd=128,n_head=4'."}
    )
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "Start from these pretrained weights instead of a fresh config."}
    )
    tokenizer_name: str | None = field(
        default="gpt2",
        metadata={"help": "Tokenizer: a Hub id or a local folder (e.g. ../shared/data/gpt2-tokenizer)."},
    )
    train_tokenizer_vocab_size: int | None = field(
        default=None, metadata={"help": "Train a byte-level BPE of this size on the training text instead."}
    )


@dataclass
class DataArguments:
    dataset_name: str | None = field(
        default="wikitext", metadata={"help": f"Hub dataset, or '{GENERATED}' for the embedded generated corpus."}
    )
    dataset_config_name: str | None = field(default="wikitext-103-raw-v1")
    train_file: str | None = field(
        default=None, metadata={"help": "Local training text (.txt/.raw, .parquet, .json)."}
    )
    validation_file: str | None = field(default=None, metadata={"help": "Local held-out text, same formats."})
    text_column: str = field(default="text")
    validation_split_percentage: int = field(
        default=5, metadata={"help": "Held-out share of the training documents when there is no validation split."}
    )
    generated_documents: int = field(default=2000, metadata={"help": "Generated corpus: ordinary documents."})
    generated_heldout_documents: int = field(default=1000, metadata={"help": "Generated corpus: held-out documents."})
    generated_duplicate_groups: int = field(
        default=16, metadata={"help": "Generated corpus: documents copied 2-16 times (planted duplicates)."}
    )
    generated_noise_documents: int = field(
        default=60, metadata={"help": "Generated corpus: random-character documents (planted noise)."}
    )
    block_size: int = field(default=1024, metadata={"help": "Tokens per training sample (packed block)."})
    max_train_samples: int | None = field(
        default=None, metadata={"help": "Keep the leading documents that fill about this many blocks."}
    )
    num_canaries: int = field(default=2)
    canary_repetitions: list[int] = field(
        default_factory=lambda: [16, 64], metadata={"help": "Copies of each canary (cycled over the canaries)."}
    )
    secret_length: int = field(default=6, metadata={"help": "Digits in each canary's secret."})
    num_contaminating: int = field(default=32, metadata={"help": "Held-out sequences inserted into training."})
    contamination_repetitions: int = field(default=4)
    contamination_k: int = field(default=32, metadata={"help": "k of k-extractability; sequences are 2k tokens."})
    num_membership_samples: int = field(default=1000, metadata={"help": "Members and non-members each."})
    max_validation_samples: int | None = field(default=None, metadata={"help": "Blocks for validation perplexity."})
    data_seed_offset: int = field(default=0, metadata={"help": "Data (canaries, insertion) seed; one for all seeds."})
    preprocessing_num_workers: int | None = field(
        default=None, metadata={"help": "Processes for tokenizing the training text (datasets.map num_proc)."}
    )
    streaming: bool = field(
        default=False,
        metadata={
            "help": "Read the training text as a stream (datasets streaming=True): nothing is downloaded or read "
            "past --max_train_samples. Needs --validation_file or a validation split, and a pretrained tokenizer."
        },
    )


@dataclass
class CartoArguments:
    preset: str | None = field(default=None, metadata={"help": "Defaults for a setting: " + ", ".join(PRESETS)})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One mapping run and all arms per seed."})
    burn_in: int = field(default=1, metadata={"help": "T_e in epochs: arms continue from this epoch's checkpoint."})
    snapshots_per_epoch: int = field(default=1, metadata={"help": "Eval-mode loss snapshots per epoch."})
    snapshot_rows: float | None = field(
        default=None,
        metadata={
            "help": "Snapshot a fixed seeded subset of the blocks, a fraction in (0, 1) or a number of blocks, for "
            "corpora too big to pass over in full at every snapshot. Only those blocks are scored: the arms' "
            "budgets, random controls and detectors draw from them, the other blocks train with weight 1 in "
            "every arm, and the curated dataset holds the scored blocks. The report and the card say so."
        },
    )
    snapshot_seed: int = field(default=0, metadata={"help": "Seed of the --snapshot_rows subset; one for all seeds."})
    eps: str = field(default="4.7055", metadata={"help": "Forget threshold: a number, quantile:q, min+d, min*(1+f)."})
    alpha_d: float = field(default=0.75)
    alpha_m: float = field(default=0.75)
    alpha: float = field(default=0.5, metadata={"help": "Loss weight of hotspot blocks in the gendatacarto arm."})
    gamma: float = field(default=1.0, metadata={"help": "Up-sampling of ambiguous-hard blocks (1 = off)."})
    remove_noisy: bool = field(default=False)
    prune_fractions: list[float] = field(
        default_factory=lambda: [0.05, 0.1], metadata={"help": "Pruned fractions of the sweep (Figures 1 and 2)."}
    )
    downweight_fractions: list[float] = field(
        default_factory=list,
        metadata={"help": "Fractions of blocks whose loss weight becomes --alpha: one arm each (and per detector)."},
    )
    detectors: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hotspot detectors (hf_carto.detectors: memorization, final_loss, loss_std, ...): for every "
            "prune and down-weighting fraction, one arm per detector plus the random arm, in place of the "
            "memorization sweep."
        },
    )
    row_evidence: bool = field(
        default=True,
        metadata={
            "help": "Leakage (carto_leak_*: k-extractability of each block's own continuation, loss, min-k%++ under "
            "the mapping run's final model, every process computing a share) and duplicate-cluster (carto_dup_*) "
            "columns on every training block, in the curated dataset, its card and the report."
        },
    )
    leak_k: int | None = field(
        default=None,
        metadata={"help": "Prefix and continuation length of carto_leak_extractable (default: half a block)."},
    )
    exposure_max_exact: int = field(default=1_000_000)
    exposure_sample_size: int = field(default=20_000)
    eval_batch_size: int = field(default=32)
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Discard an earlier run in output_dir."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Where --push_to_hub sends the dataset."})
    license: str | None = field(default="cc-by-sa-3.0")


def _parser(defaults: dict):
    import dataclasses

    from transformers import HfArgumentParser, TrainingArguments

    classes = (ModelArguments, DataArguments, CartoArguments, TrainingArguments)
    # HfArgumentParser names every argument after its dataclass field.
    fields = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - fields)
    parser = HfArgumentParser(classes)
    parser.set_defaults(**defaults)
    return parser, unknown


def parse_arguments(argv: list[str] | None):
    """``(ModelArguments, DataArguments, CartoArguments, TrainingArguments)`` from the command line,
    the preset named by ``--preset`` (if any) giving the defaults."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    defaults = dict(COMMON)
    if known.preset is not None:
        if known.preset not in PRESETS:
            raise SystemExit(f"unknown preset {known.preset!r}; choose one of {sorted(PRESETS)}")
        defaults.update(PRESETS[known.preset])
    parser, unknown = _parser(defaults)
    if unknown:
        raise SystemExit(f"preset {known.preset!r} sets unknown arguments {unknown}")
    return parser.parse_args_into_dataclasses(args=argv)


def is_local(name: str | None) -> bool:
    """Whether a model, tokenizer or config name is a local path rather than a Hub id."""
    return name is not None and (name.startswith((".", "/", "~")) or os.path.exists(name))


def model_config(model_args: ModelArguments, vocab_size: int | None = None):
    """The model's config: pretrained, GPT-2 small built locally, or a named config; with overrides."""
    from transformers import AutoConfig, GPT2Config

    if model_args.model_name_or_path:
        config = AutoConfig.from_pretrained(model_args.model_name_or_path)
    elif model_args.config_name == "gpt2":
        config = GPT2Config()  # GPT-2 small's architecture; built here, no download
    else:
        config = AutoConfig.from_pretrained(model_args.config_name)
    if model_args.config_overrides:
        if model_args.model_name_or_path:
            raise SystemExit(
                "--config_overrides changes a fresh config; it cannot be combined with pretrained weights"
            )
        config.update_from_string(model_args.config_overrides)
    if vocab_size is not None and not model_args.model_name_or_path:
        config.vocab_size = vocab_size
    return config


def _problems(model_args: ModelArguments, data_args: DataArguments, carto: CartoArguments, training) -> list[str]:
    problems = []
    epochs = training.num_train_epochs
    if epochs != int(epochs) or epochs < 2:
        problems.append(f"num_train_epochs must be a whole number >= 2 (T); got {epochs}")
    elif not 1 <= carto.burn_in < epochs:
        problems.append(f"burn_in must be in [1, num_train_epochs - 1] = [1, {int(epochs) - 1}]; got {carto.burn_in}")
    if training.max_steps > 0:
        problems.append("max_steps is not supported: the burn-in checkpoint and the arms are counted in epochs")
    if carto.snapshots_per_epoch < 1:
        problems.append(f"snapshots_per_epoch must be >= 1; got {carto.snapshots_per_epoch}")
    if carto.snapshot_rows is not None:
        from hf_carto.recording import check_snapshot_rows

        try:
            check_snapshot_rows(carto.snapshot_rows)
        except ValueError as err:
            problems.append(f"--snapshot_rows: {err}")
    elif carto.snapshot_seed != 0:
        problems.append("--snapshot_seed chooses the --snapshot_rows subset; it needs --snapshot_rows")
    if carto.leak_k is not None and not 1 <= carto.leak_k <= data_args.block_size // 2:
        problems.append(
            f"leak_k must be in [1, block_size / 2] = [1, {data_args.block_size // 2}]; got {carto.leak_k}"
        )
    if not carto.seeds:
        problems.append("--seeds needs at least one seed")
    if len(set(carto.seeds)) != len(carto.seeds):
        problems.append(f"--seeds repeats a seed: {carto.seeds}")
    bad = [f for f in carto.prune_fractions if not 0.0 < f < 1.0]
    if bad:
        problems.append(f"prune_fractions must lie in (0, 1); got {bad}")
    if not 0.0 <= carto.alpha <= 1.0:
        problems.append(f"alpha must be in [0, 1]; got {carto.alpha}")
    bad = [f for f in carto.downweight_fractions if not 0.0 < f < 1.0]
    if bad:
        problems.append(f"downweight_fractions must lie in (0, 1); got {bad}")
    if carto.downweight_fractions and not 0.0 < carto.alpha < 1.0:
        problems.append(f"down-weighting needs a loss weight --alpha in (0, 1); got {carto.alpha}")
    problems += _detector_problems(carto.detectors)
    for name in ("train_file", "validation_file"):
        path = getattr(data_args, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"--{name} {path}: no such file")
    for name in ("tokenizer_name", "model_name_or_path", "config_name"):
        value = getattr(model_args, name)
        if is_local(value) and not Path(value).expanduser().exists():
            problems.append(f"--{name} {value}: no such folder")
    if data_args.dataset_name is None and data_args.train_file is None:
        problems.append("no training data: give --train_file, --dataset_name, or --dataset_name generated")
    if data_args.train_file is not None and data_args.dataset_name == GENERATED:
        problems.append("--train_file and --dataset_name generated are two corpora; choose one")
    if model_args.tokenizer_name is None and model_args.train_tokenizer_vocab_size is None:
        problems.append("no tokenizer: give --tokenizer_name or --train_tokenizer_vocab_size")
    if data_args.max_train_samples is not None and data_args.max_train_samples < 1:
        problems.append(f"max_train_samples must be >= 1 (blocks); got {data_args.max_train_samples}")
    if data_args.streaming:
        if data_args.dataset_name == GENERATED:
            problems.append("--streaming reads a file or a Hub dataset; the generated corpus is made in memory")
        if model_args.train_tokenizer_vocab_size:
            problems.append("--streaming needs a pretrained tokenizer: training one here would read the stream twice")
        if data_args.train_file is not None and data_args.validation_file is None:
            problems.append("--streaming needs --validation_file: a stream has no end to hold documents out from")
    k = data_args.contamination_k
    if 2 * k > data_args.block_size:
        problems.append(
            f"contamination sequences are 2k = {2 * k} tokens, more than block_size {data_args.block_size}"
        )
    return problems


def _detector_problems(detectors: list[str]) -> list[str]:
    from hf_carto.detectors import detector_names

    if not detectors:
        return []
    try:
        detector_names(detectors)
    except ValueError as err:
        return [f"--detectors: {err}"]
    return []


def check_arguments(model_args: ModelArguments, data_args: DataArguments, carto: CartoArguments, training) -> None:
    """Refuse settings that cannot work, each with a message that says which and why."""
    problems = _problems(model_args, data_args, carto, training)
    if problems:
        raise SystemExit("refusing to start:\n  - " + "\n  - ".join(problems))
    config = model_config(model_args)
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if context is not None and data_args.block_size > context:
        raise SystemExit(
            f"refusing to start: block_size {data_args.block_size} exceeds the model's context of {context} tokens"
        )
