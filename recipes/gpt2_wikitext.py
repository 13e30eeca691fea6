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

Steps: documents (Hub dataset, text/parquet/json files, or the generated corpus) are tokenized one
by one; canaries (distinct prefixes, random secrets, repeated) and contaminating held-out sequences
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
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import resource
import shutil
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("gpt2_wikitext")

GENERATED = "generated"  # --dataset_name value for the embedded generated corpus
PROMPT_REPEATS_FOR_TOKENIZER = 20


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


@dataclass
class CartoArguments:
    preset: str | None = field(default=None, metadata={"help": "Defaults for a setting: " + ", ".join([])})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One mapping run and all arms per seed."})
    burn_in: int = field(default=1, metadata={"help": "T_e in epochs: arms continue from this epoch's checkpoint."})
    snapshots_per_epoch: int = field(default=1, metadata={"help": "Eval-mode loss snapshots per epoch."})
    eps: str = field(default="4.7055", metadata={"help": "Forget threshold: a number, quantile:q, min+d, min*(1+f)."})
    alpha_d: float = field(default=0.75)
    alpha_m: float = field(default=0.75)
    alpha: float = field(default=0.5, metadata={"help": "Loss weight of hotspot blocks in the gendatacarto arm."})
    gamma: float = field(default=1.0, metadata={"help": "Up-sampling of ambiguous-hard blocks (1 = off)."})
    remove_noisy: bool = field(default=False)
    prune_fractions: list[float] = field(
        default_factory=lambda: [0.05, 0.1], metadata={"help": "Pruned fractions of the sweep (Figures 1 and 2)."}
    )
    exposure_max_exact: int = field(default=1_000_000)
    exposure_sample_size: int = field(default=20_000)
    eval_batch_size: int = field(default=32)
    overwrite_output_dir: bool = field(default=False, metadata={"help": "Discard an earlier run in output_dir."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Where --push_to_hub sends the dataset."})
    license: str | None = field(default="cc-by-sa-3.0")


# Presets are defaults, not settings: a flag given on the command line always wins.
COMMON = dict(
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
_CPU_MODEL = dict(
    config_name="gpt2",
    tokenizer_name=None,
    use_cpu=True,
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    per_device_train_batch_size=32,
    per_device_eval_batch_size=128,
    eps="quantile:0.05",
    license=None,
)
# The measured CPU experiments: at least 32 canaries over a range of copy counts, secrets of 10^4
# candidates ranked exactly, planted material (canaries, contaminating sequences, duplicates) in at
# most 5% of the 32-token training blocks, so perplexity reflects ordinary text.
_CPU_EXPERIMENT = dict(
    config_overrides="n_layer=2,n_embd=128,n_head=4",
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
)
PRESETS: dict[str, dict[str, Any]] = {
    # The README's main command: the generated corpus, a tiny GPT-2, about 9 minutes on 2 cores.
    "cpu-demo": dict(
        _CPU_MODEL,
        dataset_name=GENERATED,
        generated_documents=5500,
        generated_heldout_documents=1500,
        generated_duplicate_groups=2,
        generated_noise_documents=4,
        train_tokenizer_vocab_size=1024,
        **_CPU_EXPERIMENT,
        prune_fractions=[0.1],
        output_dir="outputs/gpt2_demo",
    ),
    # A CPU-scale WikiText-2 run: pass --train_file/--validation_file (see the module docstring).
    "cpu-wikitext2": dict(
        _CPU_MODEL,
        dataset_name=None,
        train_tokenizer_vocab_size=4096,
        max_train_samples=7000,
        **_CPU_EXPERIMENT,
        seeds=[0, 1, 2, 3, 4],
        prune_fractions=[0.1],
        output_dir="outputs/gpt2_wikitext2_cpu",
    ),
    # Seconds, for tests: everything runs, nothing is learned.
    "cpu-tiny": dict(
        _CPU_MODEL,
        dataset_name=GENERATED,
        generated_documents=150,
        generated_heldout_documents=150,
        train_tokenizer_vocab_size=300,
        config_overrides="n_layer=1,n_embd=32,n_head=2",
        block_size=64,
        num_train_epochs=3,
        burn_in=1,
        snapshots_per_epoch=2,
        learning_rate=3e-3,
        per_device_train_batch_size=8,
        logging_steps=10,
        num_canaries=2,
        canary_repetitions=[2, 4],
        secret_length=3,
        num_contaminating=4,
        contamination_repetitions=2,
        contamination_k=8,
        num_membership_samples=20,
        max_validation_samples=20,
        prune_fractions=[0.1],
        exposure_sample_size=200,
        eval_batch_size=16,
        output_dir="outputs/gpt2_tiny",
    ),
}
CartoArguments.__dataclass_fields__["preset"].metadata = {"help": "Defaults for a setting: " + ", ".join(PRESETS)}

# Settings that may change between a run and its resumption; every other field of the recipe's own
# arguments must match.
RESUMABLE = {"preset", "overwrite_output_dir", "hub_dataset_id", "license"}
# The training arguments that decide the results (the others are logging, saving, devices...).
TRAINING_SETTINGS = (
    "per_device_train_batch_size", "gradient_accumulation_steps", "num_train_epochs", "learning_rate",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_steps", "optim", "optim_args", "weight_decay",
    "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "label_smoothing_factor", "bf16", "fp16",
    "data_seed", "max_steps",
)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# Arguments and checks: everything that can be wrong is found before any training step.


def parse_arguments(argv: list[str] | None):
    from transformers import HfArgumentParser, TrainingArguments

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", default=None)
    known, _ = pre.parse_known_args(argv)
    parser = HfArgumentParser((ModelArguments, DataArguments, CartoArguments, TrainingArguments))
    defaults = dict(COMMON)
    if known.preset is not None:
        if known.preset not in PRESETS:
            raise SystemExit(f"unknown preset {known.preset!r}; choose one of {sorted(PRESETS)}")
        defaults.update(PRESETS[known.preset])
    dests = {action.dest for action in parser._actions}
    unknown = sorted(set(defaults) - dests)
    if unknown:
        raise SystemExit(f"preset {known.preset!r} sets unknown arguments {unknown}")
    parser.set_defaults(**defaults)
    return parser.parse_args_into_dataclasses(args=argv)


def _is_local(name: str | None) -> bool:
    return name is not None and (name.startswith((".", "/", "~")) or os.path.exists(name))


def _model_config(model_args: ModelArguments, vocab_size: int | None = None):
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


def check_arguments(model_args: ModelArguments, data_args: DataArguments, carto: CartoArguments, training) -> None:
    """Refuse settings that cannot work, each with a message that says which and why."""
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
    if not carto.seeds:
        problems.append("--seeds needs at least one seed")
    if len(set(carto.seeds)) != len(carto.seeds):
        problems.append(f"--seeds repeats a seed: {carto.seeds}")
    bad = [f for f in carto.prune_fractions if not 0.0 < f < 1.0]
    if bad:
        problems.append(f"prune_fractions must lie in (0, 1); got {bad}")
    if not 0.0 <= carto.alpha <= 1.0:
        problems.append(f"alpha must be in [0, 1]; got {carto.alpha}")
    for name in ("train_file", "validation_file"):
        path = getattr(data_args, name)
        if path is not None and not Path(path).is_file():
            problems.append(f"--{name} {path}: no such file")
    for name in ("tokenizer_name", "model_name_or_path", "config_name"):
        value = getattr(model_args, name)
        if _is_local(value) and not Path(value).expanduser().exists():
            problems.append(f"--{name} {value}: no such folder")
    if data_args.dataset_name is None and data_args.train_file is None:
        problems.append("no training data: give --train_file, --dataset_name, or --dataset_name generated")
    if data_args.train_file is not None and data_args.dataset_name == GENERATED:
        problems.append("--train_file and --dataset_name generated are two corpora; choose one")
    if model_args.tokenizer_name is None and model_args.train_tokenizer_vocab_size is None:
        problems.append("no tokenizer: give --tokenizer_name or --train_tokenizer_vocab_size")
    k = data_args.contamination_k
    if 2 * k > data_args.block_size:
        problems.append(
            f"contamination sequences are 2k = {2 * k} tokens, more than block_size {data_args.block_size}"
        )
    if problems:
        raise SystemExit("refusing to start:\n  - " + "\n  - ".join(problems))
    config = _model_config(model_args)
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if context is not None and data_args.block_size > context:
        raise SystemExit(
            f"refusing to start: block_size {data_args.block_size} exceeds the model's context of {context} tokens"
        )


def run_settings(model_args, data_args, carto, training, num_processes: int = 1) -> dict[str, Any]:
    """The settings that decide the results, for the resume check and the report."""

    def plain(value):
        return value if isinstance(value, (int, float, str, bool, list, type(None))) else str(value)

    settings = {
        f.name: plain(getattr(args, f.name))
        for args in (model_args, data_args, carto)
        for f in dataclasses.fields(args)
        if f.name not in RESUMABLE
    }
    settings.update({name: plain(getattr(training, name)) for name in TRAINING_SETTINGS})
    # The global batch is per-device batch x processes: arms trained on another count would not compare.
    settings["num_processes"] = num_processes
    # Local inputs are compared by what they hold, not by how their path was spelled: the resolved
    # path (./a.txt and /abs/a.txt are one file) and a fingerprint of the content (a file edited in
    # place is another corpus).
    for name in _local_inputs(model_args, data_args):
        settings[name] = str(Path(settings[name]).expanduser().resolve())
        settings[name + FINGERPRINT] = _fingerprint(Path(settings[name]))
    return settings


FINGERPRINT = "_fingerprint"  # suffix of the settings that hold a local input's size and hash


def _local_inputs(model_args, data_args) -> list[str]:
    """The settings naming a local file or folder that the run reads."""

    def local(value: str | None) -> bool:
        return _is_local(value) and Path(value).expanduser().exists()

    names = [name for name in ("train_file", "validation_file") if local(getattr(data_args, name))]
    if not model_args.train_tokenizer_vocab_size and local(model_args.tokenizer_name):
        names.append("tokenizer_name")
    if local(model_args.model_name_or_path):
        names.append("model_name_or_path")
    elif model_args.config_name != "gpt2" and local(model_args.config_name):  # "gpt2" is built, not read
        names.append("config_name")
    return names


def _fingerprint(path: Path) -> dict[str, Any]:
    """Size and sha256 of a file, or of every file of a folder (with their relative paths).

    Every process hashes every input once per start: for a multi-GB corpus that is seconds (sha256
    reads roughly 0.5-2 GB/s), small next to tokenizing it, and it is what makes an edited file
    impossible to resume over unnoticed.
    """
    import hashlib

    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, size = hashlib.sha256(), 0
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    return {"bytes": size, "sha256": digest.hexdigest()}


def _difference(key: str, earlier: dict[str, Any], now: dict[str, Any]) -> str | None:
    """One line of the resume refusal; None for a fingerprint whose path changed too (that line says it)."""
    if key.endswith(FINGERPRINT):
        name = key.removesuffix(FINGERPRINT)
        before, after = earlier.get(key), now.get(key)
        if earlier.get(name) != now.get(name):
            return None
        if before and after:
            was = f"{before['bytes']:,} bytes, sha256 {before['sha256'][:12]}..."
            is_ = f"{after['bytes']:,} bytes, sha256 {after['sha256'][:12]}..."
            return f"    {name}: {now.get(name)} has changed since the earlier run (then {was}; now {is_})"
    return f"    {key}: earlier {earlier.get(key)!r}, now {now.get(key)!r}"


# Written when a run starts and replaced by run_config.json once its data stage has succeeded: a
# folder holding it (and no run_config.json) is what a failed start left, safe to clear on the next.
PENDING_CONFIG = "run_config.pending.json"


def default_dataset_id(data_args: DataArguments) -> str:
    """A placeholder Hub id named after the data, for the card when --hub_dataset_id is not given."""
    from hf_carto.hub import repo_name

    if data_args.train_file is not None:
        source = Path(data_args.train_file).stem  # wiki.train.raw -> wiki.train
    elif data_args.dataset_name in (None, GENERATED):
        source = GENERATED
    else:
        source = data_args.dataset_name.split("/")[-1]
        config = data_args.dataset_config_name
        if config:  # wikitext + wikitext-103-raw-v1 -> wikitext-103-raw-v1
            source = config if config.startswith(source) else f"{source}-{config}"
    return f"your-name/gpt2-{repo_name(source, default='data', max_length=96 - len('gpt2--curated'))}-curated"


def record_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record the run's settings once its data stage has succeeded: from now on it can be resumed."""
    _write_json(out / "run_config.json", settings)
    (out / PENDING_CONFIG).unlink(missing_ok=True)


def check_output_dir(out: Path, settings: dict[str, Any], overwrite: bool) -> bool:
    """Refuse an output folder from an incompatible earlier run; return True when resuming.

    ``run_config.json`` is written only once the data stage has succeeded, so a start that failed
    (a wrong column, too little held-out text...) never locks its settings in: its folder holds
    ``run_config.pending.json`` and is cleared by the next start, whatever its settings.
    """
    config_file = out / "run_config.json"
    if config_file.exists() and not overwrite:
        earlier = json.loads(config_file.read_text())
        differ = sorted(k for k in set(earlier) | set(settings) if earlier.get(k) != settings.get(k))
        if differ:
            lines = [line for k in differ if (line := _difference(k, earlier, settings)) is not None]
            raise SystemExit(
                f"{out} holds a run with other settings ({len(lines)} differ):\n"
                + "\n".join(lines[:12])
                + "\n  use another --output_dir, or --overwrite_output_dir to discard it"
            )
        return True
    failed_start = (out / PENDING_CONFIG).exists()
    if out.exists() and any(out.iterdir()) and not config_file.exists() and not overwrite and not failed_start:
        raise SystemExit(f"{out} is not empty and holds no run_config.json; use another --output_dir")
    return False


# ----------------------------------------------------------------------------------------------
# Stage times: printed at the end of every run.


class StageTimer:
    """Seconds per stage in this invocation, and totals over every invocation of the run.

    With ``path``, the totals are kept on disk after each stage, so a run that is interrupted and
    resumed still reports what all of its stages cost (work read back costs nothing again).
    """

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.seconds: dict[str, float] = {}
        earlier = json.loads(path.read_text()) if path is not None and path.exists() else {}
        self.total: dict[str, float] = earlier.get("seconds", {})
        self.invocations = earlier.get("invocations", 0) + 1

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self.seconds[stage] = self.seconds.get(stage, 0.0) + spent
            self.total[stage] = self.total.get(stage, 0.0) + spent
            if self.path is not None:
                _write_json(self.path, {"seconds": self.total, "invocations": self.invocations})

    @staticmethod
    def table(seconds: dict[str, float]) -> str:
        total = sum(seconds.values()) or 1.0
        rows = [f"| {k} | {v:.1f} s | {v / total:.0%} |" for k, v in seconds.items()]
        return "\n".join(["| stage | time | share |", "|---|---:|---:|", *rows, f"| total | {total:.1f} s | |"])


# ----------------------------------------------------------------------------------------------
# Data: documents -> tokens -> inserted canaries and held-out sequences -> packed blocks.


def _read_file(path: str, text_column: str, flag: str = "--train_file"):
    """The file as a dataset, refused (``SystemExit`` naming the file and column) unless it holds text."""
    from datasets import load_dataset

    if os.path.getsize(path) == 0:
        # The loaders fail on an empty file with a bare StopIteration or a schema error.
        raise SystemExit(f"refusing to start: {flag} {path} is empty (0 bytes): no {text_column!r} rows to read")
    suffix = Path(path).suffix.lower()
    builder = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}.get(suffix, "text")
    try:
        ds = load_dataset(builder, data_files={"train": path}, split="train")
    except Exception as err:
        cause = err
        while cause.__cause__ is not None:  # DatasetGenerationError hides the reason in its cause
            cause = cause.__cause__
        raise SystemExit(
            f"refusing to start: {flag} {path} could not be read as {builder}: {type(cause).__name__}: {cause}"
        ) from err
    if text_column not in ds.column_names:
        raise SystemExit(f"{path} has no {text_column!r} column (columns: {ds.column_names}); set --text_column")
    _check_texts(ds, text_column, f"{flag} {path}")
    return ds


def _row_list(indices, shown: int = 5) -> str:
    head = ", ".join(str(int(i)) for i in indices[:shown])
    return head + (", ..." if len(indices) > shown else "")


def _check_texts(ds, text_column: str, source: str) -> None:
    """Refuse a text column with no rows, null rows, non-text values or only blank rows.

    Null rows are refused, not dropped: a null usually means a broken export or the wrong column,
    and dropping them would change the corpus without anyone noticing. Blank rows are dropped
    later, as before, since plain-text corpora (WikiText's blank lines between paragraphs) hold
    many; a column with nothing but blank rows is refused.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    column = ds.data.column(text_column)
    total = len(column)
    where = f"{source}, column {text_column!r}"
    if total == 0:
        raise SystemExit(f"refusing to start: {where}: 0 rows; nothing to train or evaluate on")
    nulls = np.flatnonzero(pc.is_null(column).to_numpy(zero_copy_only=False))
    if len(nulls):
        raise SystemExit(
            f"refusing to start: {where}: {len(nulls):,} of {total:,} rows are null (rows {_row_list(nulls)}, "
            "counted from 0); fill them in or remove those rows (null rows are refused, not dropped)"
        )
    if not (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)):
        raise SystemExit(f"refusing to start: {where} holds {column.type} values, not text; set --text_column")
    blank = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(column)), 0).to_numpy(zero_copy_only=False)
    if blank.all():
        raise SystemExit(
            f"refusing to start: {where}: all {total:,} rows are empty or blank "
            f"(rows {_row_list(np.flatnonzero(blank))}, counted from 0); nothing to train or evaluate on"
        )


def check_inputs(data_args: DataArguments) -> None:
    """Read the local data files and refuse empty, null or blank text columns.

    Every process calls this before the processes meet for the first time: each one then stops with
    the same message, where a failure inside the main process's data stage would leave the others
    waiting at a barrier for a peer that is gone. Reading is cached by ``datasets``, so the data
    stage reads the files again at no cost.
    """
    for flag, path in (("--train_file", data_args.train_file), ("--validation_file", data_args.validation_file)):
        if path is not None:
            _read_file(path, data_args.text_column, flag)


def load_documents(data_args: DataArguments, seed: int) -> tuple[list[str], list[int], list[str]]:
    """Training documents with their planted kind, and held-out documents of the same distribution."""
    from hf_carto.data import CorpusConfig, generate_corpus, hold_out
    from hf_carto.packing import PLANTED_NAMES

    if data_args.dataset_name == GENERATED:
        corpus = generate_corpus(
            CorpusConfig(
                num_documents=data_args.generated_documents + data_args.generated_heldout_documents,
                num_canaries=0,
                num_duplicate_groups=data_args.generated_duplicate_groups,
                num_noise_documents=data_args.generated_noise_documents,
                seed=seed,
            )
        )
        train, heldout = hold_out(corpus, data_args.generated_heldout_documents, seed=seed)
        names = corpus.features["truth"].names
        kinds = [PLANTED_NAMES.index(names[t]) for t in train["truth"][:]]
        return train["text"][:], kinds, heldout["text"][:]
    column = data_args.text_column
    if data_args.train_file is not None:
        train_texts = _read_file(data_args.train_file, column)[column][:]
        heldout_texts = (
            _read_file(data_args.validation_file, column, "--validation_file")[column][:]
            if data_args.validation_file
            else None
        )
    else:
        from datasets import load_dataset

        raw = load_dataset(data_args.dataset_name, data_args.dataset_config_name)
        name = f"--dataset_name {data_args.dataset_name}"
        for split in ("train", "validation"):
            if split in raw:
                if column not in raw[split].column_names:
                    raise SystemExit(
                        f"{name} ({split}) has no {column!r} column (columns: {raw[split].column_names}); "
                        "set --text_column"
                    )
                _check_texts(raw[split], column, f"{name} ({split} split)")
        train_texts = raw["train"][column][:]
        heldout_texts = raw["validation"][column][:] if "validation" in raw else None
    total = len(train_texts)
    train_texts = [t for t in train_texts if t.strip()]
    if len(train_texts) < total:
        logger.info("skipping %d of %d training rows that are empty or blank", total - len(train_texts), total)
    if heldout_texts is None:
        n = max(1, len(train_texts) * data_args.validation_split_percentage // 100)
        if n >= len(train_texts):
            raise SystemExit(
                f"refusing to start: {len(train_texts)} training document(s) with text; holding out "
                f"{data_args.validation_split_percentage}% for evaluation leaves none to train on"
            )
        heldout_texts, train_texts = train_texts[-n:], train_texts[:-n]
    heldout_texts = [t for t in heldout_texts if t.strip()]
    return train_texts, [0] * len(train_texts), heldout_texts


def build_tokenizer(model_args: ModelArguments, texts: list[str]):
    from transformers import AutoTokenizer

    if model_args.train_tokenizer_vocab_size:
        from hf_carto.demo import build_tokenizer as train_bpe

        return train_bpe(texts, model_args.train_tokenizer_vocab_size)
    tokenizer = AutoTokenizer.from_pretrained(model_args.tokenizer_name or model_args.model_name_or_path)
    if tokenizer.eos_token_id is None:
        raise SystemExit(f"tokenizer {model_args.tokenizer_name} has no end-of-text token to separate documents")
    return tokenizer


def _tokenize(tokenizer, texts: list[str], desc: str) -> list[list[int]]:
    from datasets import Dataset

    eos = tokenizer.eos_token_id
    ds = Dataset.from_dict({"text": texts}).map(
        lambda batch: {"ids": [ids + [eos] for ids in tokenizer(batch["text"])["input_ids"]]},
        batched=True,
        remove_columns=["text"],
        desc=desc,
    )
    return ds["ids"][:]


def prepare_data(model_args, data_args: DataArguments, out: Path, is_main: bool):
    """Blocks, canaries and evaluation sets; made once by the main process and read by the others."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    from hf_carto import make_canaries, save_registry
    from hf_carto.canaries import load_registry, unused_templates
    from hf_carto.packing import PLANTED_NAMES, cut_windows, insert_documents, pack_documents, whole_copies

    data_dir = out / "data"
    done = data_dir / "done.json"
    if done.exists():
        tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
        blocks = load_from_disk(str(data_dir / "train_blocks"))
        canaries = load_registry(out / "canaries.json")
        eval_sets = json.loads((data_dir / "eval_sets.json").read_text())
        eval_sets["control_canaries"] = load_registry(out / "control_canaries.json")
        return tokenizer, blocks, canaries, eval_sets
    if not is_main:
        raise RuntimeError("prepare_data: the main process has not written the data")
    seed = data_args.data_seed_offset
    rng = np.random.default_rng(seed)
    train_texts, kinds, heldout_texts = load_documents(data_args, seed)
    canaries = make_canaries(
        data_args.num_canaries,
        repetitions=data_args.canary_repetitions,
        secret_length=data_args.secret_length,
        seed=seed,
    )
    # Never inserted: the floor of extraction, and the planted non-members below.
    control_canaries = make_canaries(
        data_args.num_canaries,
        repetitions=[1],
        secret_length=data_args.secret_length,
        templates=unused_templates(canaries),
        seed=seed + 3,
        first_id=data_args.num_canaries,
    )
    # A tokenizer trained here sees every canary prompt (trained and control alike, never a secret)
    # as often as common phrases: prompts of words the corpus lacks would otherwise fall apart into
    # single characters and make canaries far longer than a real tokenizer makes them.
    prompts = [c.prefix for c in canaries + control_canaries for _ in range(PROMPT_REPEATS_FOR_TOKENIZER)]
    tokenizer = build_tokenizer(model_args, train_texts + prompts)
    eos = tokenizer.eos_token_id
    train_docs = _tokenize(tokenizer, train_texts, "Tokenizing training documents")
    if data_args.max_train_samples is not None:
        cumulative = np.cumsum([len(d) for d in train_docs])
        keep = int(np.searchsorted(cumulative, data_args.max_train_samples * data_args.block_size)) + 1
        train_docs, kinds = train_docs[:keep], kinds[:keep]
    heldout_docs = _tokenize(tokenizer, heldout_texts, "Tokenizing held-out documents")
    heldout_docs = [heldout_docs[i] for i in rng.permutation(len(heldout_docs))]

    # Contaminating and control sequences: 2k tokens from inside one held-out document each.
    n_c, k2 = data_args.num_contaminating, 2 * data_args.contamination_k
    try:
        windows, used, usable = cut_windows([d[:-1] for d in heldout_docs], 2 * n_c, k2, rng)
    except ValueError as err:
        raise SystemExit(f"held-out text: {err}; lower --num_contaminating or --contamination_k") from None
    contaminating, control = windows[:n_c], windows[n_c:]
    used = set(used)
    rest = [d for i, d in enumerate(heldout_docs) if i not in used]

    copies = [c for c in canaries for _ in range(c.repetitions)]
    inserted = [tokenizer(c.text)["input_ids"] + [eos] for c in copies]
    inserted += [seq + [eos] for seq in contaminating for _ in range(data_args.contamination_repetitions)]
    canary_kind, contaminated_kind = PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")
    inserted_kinds = [canary_kind] * len(copies) + [contaminated_kind] * (len(inserted) - len(copies))
    docs, doc_kinds, origin = insert_documents(train_docs, kinds, inserted, inserted_kinds, seed=seed + 1)
    # is_canary (what publishing withholds) marks every block with a canary token, since part of a
    # copy is part of a secret; a canary's sample_ids (and carto_canary_id) are the blocks that
    # hold a whole copy, the ones it can be extracted from.
    blocks = pack_documents(docs, data_args.block_size, kinds=doc_kinds)
    positions = np.flatnonzero((origin >= 0) & (origin < len(copies)))
    for position, block in zip(positions, whole_copies(docs, positions, data_args.block_size), strict=True):
        if block >= 0:
            copies[origin[position]].sample_ids.append(int(block))
    first_canary = np.full(len(blocks), -1, dtype=np.int64)
    for canary in reversed(canaries):  # the lowest canary id wins where a block holds several
        canary.sample_ids = sorted(set(canary.sample_ids))
        first_canary[canary.sample_ids] = canary.canary_id
    blocks = blocks.add_column("carto_canary_id", first_canary)
    blocks = blocks.add_column("text", tokenizer.batch_decode(blocks["input_ids"][:]))
    missing = [c.canary_id for c in canaries if not c.sample_ids]
    if missing:
        logger.warning("canaries %s have no whole copy inside one block; they stay in the extraction test", missing)

    planted_out, rest = _planted_non_members(
        rest, control_canaries, control, tokenizer, data_args, rng, density=len(inserted) / max(1, len(train_docs))
    )
    heldout_blocks = pack_documents(rest, data_args.block_size)["input_ids"][:] if rest else []
    n_m = data_args.num_membership_samples
    if len(heldout_blocks) < n_m + 1:
        raise SystemExit(
            f"after the contamination windows and the planted controls, the held-out text packs into "
            f"{len(heldout_blocks)} blocks of {data_args.block_size} tokens; {n_m + 1} are needed "
            f"({n_m} non-members, >= 1 for perplexity). Give more held-out text or lower --num_membership_samples"
        )
    validation = heldout_blocks[n_m:]
    if data_args.max_validation_samples is not None:
        validation = validation[: data_args.max_validation_samples]
    members, member_ids = _member_blocks(blocks, n_m, seed)
    planted = _planted_blocks(blocks)
    eval_sets = {
        "contaminating": contaminating,
        "control": control,
        "members": members,
        "member_ids": member_ids,
        "non_members": heldout_blocks[:n_m],
        "planted_members": planted["input_ids"],
        "planted_member_ids": planted["sample_id"],
        "planted_non_members": planted_out,
        "validation": validation,
        "counts": {
            "heldout_documents": len(heldout_docs),
            "heldout_documents_long_enough": usable,
            "contaminating": len(contaminating),
            "control": len(control),
            "planted_blocks": len(planted["sample_id"]),
            # Everything that is not ordinary text (the generated corpus also plants duplicates and noise).
            "planted_share": float((np.asarray(blocks["truth"][:]) != 0).mean()),
            "planted_non_members": len(planted_out),
            "canary_whole_copies": {str(c.canary_id): len(c.sample_ids) for c in canaries},
        },
    }
    share = eval_sets["counts"]["planted_share"]
    if share > 0.05:
        logger.warning(
            "planted material fills %.1f%% of the training blocks (> 5%%): perplexity trade-offs then "
            "reflect the planted text more than ordinary text",
            100 * share,
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out / "tokenizer"))
    blocks.save_to_disk(str(data_dir / "train_blocks"))
    save_registry(canaries, out / "canaries.json")
    save_registry(control_canaries, out / "control_canaries.json")
    (data_dir / "eval_sets.json").write_text(json.dumps(eval_sets))
    done.write_text(json.dumps({"num_blocks": len(blocks)}))
    eval_sets["control_canaries"] = control_canaries
    return tokenizer, blocks, canaries, eval_sets


def _planted_non_members(rest, control_canaries, control, tokenizer, data_args, rng, density: float):
    """Blocks built like the planted training blocks from material that is never trained on:
    each never-inserted canary and control sequence once, inserted into held-out documents at the
    training set's density of inserted documents, packed the same way. Returns those blocks and the
    held-out documents left over."""
    from hf_carto.packing import PLANTED_NAMES, insert_documents, pack_documents

    eos = tokenizer.eos_token_id
    inserted = [tokenizer(c.text)["input_ids"] + [eos] for c in control_canaries]
    inserted += [seq + [eos] for seq in control]
    num_filler = min(len(rest) // 2, max(1, round(len(inserted) / max(density, 1e-9))))
    filler, rest = rest[:num_filler], rest[num_filler:]
    kind = PLANTED_NAMES.index("canary")
    docs, kinds, _ = insert_documents(
        filler, [0] * len(filler), inserted, [kind] * len(inserted), seed=int(rng.integers(2**31))
    )
    packed = pack_documents(docs, data_args.block_size, kinds=kinds)
    planted = np.flatnonzero(np.asarray(packed["truth"][:]) != 0)
    return [packed[int(i)]["input_ids"] for i in planted], rest


def _planted_blocks(blocks) -> dict[str, list]:
    """Training blocks holding inserted material (canary or contaminating tokens)."""
    from hf_carto.curation import read_columns
    from hf_carto.packing import PLANTED_NAMES

    truth = read_columns(blocks, ["truth"])["truth"]
    kinds = [PLANTED_NAMES.index("canary"), PLANTED_NAMES.index("contaminated")]
    chosen = np.flatnonzero(np.isin(truth, kinds))
    subset = blocks.select(chosen)
    return {"input_ids": subset["input_ids"][:], "sample_id": subset["sample_id"][:]}


def _member_blocks(blocks, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """Training blocks with no planted material: the members of the membership-inference test."""
    from hf_carto.curation import read_columns

    truth = read_columns(blocks, ["truth"])["truth"]
    candidates = np.flatnonzero(truth == 0)
    if len(candidates) < count:
        raise SystemExit(f"only {len(candidates)} ordinary training blocks for {count} membership samples")
    chosen = np.sort(np.random.default_rng(seed + 2).choice(candidates, size=count, replace=False))
    subset = blocks.select(chosen)
    return subset["input_ids"][:], subset["sample_id"][:]


# ----------------------------------------------------------------------------------------------
# Mapping run, scoring, arms: every process takes part.


def steps_per_epoch(num_samples: int, training, world_size: int) -> int:
    """Optimizer steps in one epoch, as the Trainer counts them under ``accelerate``."""
    batches = math.ceil(num_samples / (training.per_device_train_batch_size * world_size))
    return math.ceil(batches / training.gradient_accumulation_steps)


def new_model(model_args: ModelArguments, tokenizer, seed: int):
    from transformers import AutoModelForCausalLM, set_seed

    set_seed(seed)  # the initial weights depend on the seed only, never on the process count
    if model_args.model_name_or_path:
        return AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path)
    config = _model_config(model_args, vocab_size=len(tokenizer))
    config.bos_token_id = config.eos_token_id = tokenizer.eos_token_id
    return AutoModelForCausalLM.from_config(config)


def _training_args(training, **changes):
    # The recipe publishes at the end; the Trainer itself never pushes, evaluates or saves on its own.
    return dataclasses.replace(training, push_to_hub=False, save_strategy="no", eval_strategy="no", **changes)


def _write_json(path: Path, data: Any) -> None:
    from hf_carto.atomic import write_json_atomic

    write_json_atomic(data, path)


def mapping_run(seed, model_args, carto: CartoArguments, training, blocks, tokenizer, seed_dir: Path, state) -> dict:
    """Train T epochs from scratch, recording eval-mode losses; save the burn-in checkpoint."""
    from transformers import TrainerCallback, default_data_collator
    from transformers.trainer_utils import get_last_checkpoint

    from hf_carto import RecordingConfig, RecordingTrainer

    run_dir = seed_dir / "mapping"
    done = run_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    epochs = int(training.num_train_epochs)
    per_epoch = steps_per_epoch(len(blocks), training, state.num_processes)
    every = max(1, per_epoch // carto.snapshots_per_epoch) if carto.snapshots_per_epoch > 1 else None
    burn_in_step = carto.burn_in * per_epoch

    class SaveBurnIn(TrainerCallback):
        def on_step_end(self, args, state_, control, **kwargs):
            if state_.global_step == burn_in_step:
                control.should_save = True

    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = RecordingTrainer(
        model=new_model(model_args, tokenizer, seed),
        args=_training_args(training, output_dir=str(run_dir), seed=seed, num_train_epochs=epochs),
        train_dataset=blocks.select_columns(["input_ids", "labels", "sample_id"]),
        data_collator=default_data_collator,
        recording=RecordingConfig(mode="eval", snapshot_every=every, overwrite=True),
        callbacks=[SaveBurnIn()],
    )
    checkpoint = get_last_checkpoint(str(run_dir)) if any(run_dir.glob("checkpoint-*")) else None
    if checkpoint:
        logger.info("resuming the mapping run from %s", checkpoint)
    trainer.train(resume_from_checkpoint=checkpoint)
    if trainer.state.global_step != epochs * per_epoch:
        raise RuntimeError(f"expected {epochs * per_epoch} steps, the Trainer took {trainer.state.global_step}")
    trainer.save_model(str(run_dir / "final"))
    info = {
        "global_step": trainer.state.global_step,
        "steps_per_epoch": per_epoch,
        "snapshot_every": every,
        "checkpoint": str(run_dir / f"checkpoint-{burn_in_step}"),
        "burn_in_step": burn_in_step,
        "final_train_loss": next((h["loss"] for h in reversed(trainer.state.log_history) if "loss" in h), None),
    }
    if state.is_main_process:
        _write_json(done, info)
    state.wait_for_everyone()
    return info


def score_blocks(blocks, mapping: dict, carto: CartoArguments, seed_dir: Path):
    """Merge the recorded losses into columns, score, assign quadrants; saved once, then read."""
    from hf_carto import LossStore, add_cartography, add_loss_columns, cartography_summary, fit_cartography
    from hf_carto.io import load_scored, save_scored

    scored_dir = seed_dir / "scored"
    if scored_dir.exists():
        return load_scored(scored_dir)
    run_dir = seed_dir / "mapping"
    snapshots = LossStore(run_dir).completed()
    burn_in = sum(1 for info in snapshots.values() if info["step"] <= mapping["burn_in_step"])
    data = add_loss_columns(blocks, run_dir)
    fit = fit_cartography(data, burn_in=burn_in, eps=carto.eps, alpha_d=carto.alpha_d, alpha_m=carto.alpha_m)
    scored = add_cartography(data, fit)
    save_scored(scored, scored_dir, fit=fit, summary=cartography_summary(scored, fit))
    return scored, fit


PRUNED_FAMILY, RANDOM_PRUNED_FAMILY = "gendatacarto (top m pruned)", "random (pruned)"
QUADRANT_FAMILIES = {"gendatacarto": "gendatacarto (quadrant rules)", "random": "random (quadrant rules)"}
ARM_COLUMNS = ["input_ids", "labels", "sample_id", "carto_loss_weight", "carto_sampling_weight", "carto_keep"]


def make_arms(scored, carto: CartoArguments, seed: int) -> dict[str, tuple[str, Any]]:
    """``name -> (family, dataset)``: the paper's intervention, its random control, and the pruning sweep."""
    from hf_carto import build_arms

    main = build_arms(scored, alpha=carto.alpha, gamma=carto.gamma, remove_noisy=carto.remove_noisy, seed=seed)
    arms = {
        "no_intervention": ("no_intervention", main["no_intervention"]),
        "gendatacarto": (QUADRANT_FAMILIES["gendatacarto"], main["gendatacarto"]),
        "random": (QUADRANT_FAMILIES["random"], main["random"]),
    }
    for fraction in carto.prune_fractions:
        pruned = build_arms(scored, budget=fraction, alpha=0.0, seed=seed)
        arms[f"gendatacarto_prune{fraction:g}"] = (PRUNED_FAMILY, pruned["gendatacarto"])
        arms[f"random_prune{fraction:g}"] = (RANDOM_PRUNED_FAMILY, pruned["random"])
    return arms


def train_arm(name, arm, mapping: dict, training, carto: CartoArguments, arm_dir: Path, seed: int, state) -> dict:
    """Continue from the burn-in checkpoint for T - T_e epochs on one arm's curated data."""
    from transformers import default_data_collator

    from hf_carto import arm_budget, continue_from_checkpoint

    done = arm_dir / "done.json"
    if done.exists():
        return json.loads(done.read_text())
    epochs = int(training.num_train_epochs) - carto.burn_in
    args = _training_args(training, output_dir=str(arm_dir), seed=seed, num_train_epochs=epochs)
    trainer = continue_from_checkpoint(
        mapping["checkpoint"], arm.select_columns(ARM_COLUMNS), args, data_collator=default_data_collator
    )
    trainer.train()
    trainer.save_model(str(arm_dir / "model"))
    info = {
        "arm": name,
        "budget": arm_budget(arm),
        "start_step": trainer.continued_from_step,
        "end_step": trainer.continued_from_step + trainer.state.global_step,
    }
    if state.is_main_process:
        _write_json(done, info)
    state.wait_for_everyone()
    return info


# ----------------------------------------------------------------------------------------------
# Evaluation and outputs: the main process alone.


def evaluate(
    model_dir: Path, out_dir: Path, tokenizer, canaries, eval_sets, data_args, carto, training, seed, member_mask
) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from hf_carto import evaluate_model

    report_file = out_dir / "report.json"
    if report_file.exists():
        return json.loads(report_file.read_text())
    device = "cuda" if torch.cuda.is_available() and not training.use_cpu else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).to(device)
    return evaluate_model(
        model,
        tokenizer,
        canaries=canaries,
        control_canaries=eval_sets["control_canaries"],
        contaminating=eval_sets["contaminating"],
        control=eval_sets["control"],
        members=eval_sets["members"],
        non_members=eval_sets["non_members"],
        member_texts=tokenizer.batch_decode(eval_sets["members"]),
        non_member_texts=tokenizer.batch_decode(eval_sets["non_members"]),
        member_subsets={"trained_by_every_arm": member_mask},
        planted_members=eval_sets["planted_members"],
        planted_non_members=eval_sets["planted_non_members"],
        validation=eval_sets["validation"],
        k=data_args.contamination_k,
        exposure_max_exact=carto.exposure_max_exact,
        exposure_sample_size=carto.exposure_sample_size,
        batch_size=carto.eval_batch_size,
        output_dir=out_dir,
        seed=seed,
    )


def trained_by_every_arm(arms: dict[str, tuple[str, Any]], member_ids: list[int]) -> list[bool]:
    """For each membership member, whether every arm trained on it (kept, with a positive weight):
    arms that removed some members would otherwise be scored on rows they never saw."""
    from hf_carto.curation import read_columns

    trained = None
    for _, arm in arms.values():
        cols = read_columns(arm, ["sample_id", "carto_keep", "carto_loss_weight"])
        ids = set(cols["sample_id"][cols["carto_keep"] & (cols["carto_loss_weight"] > 0)].tolist())
        trained = ids if trained is None else trained & ids
    return [sid in trained for sid in member_ids]


def _mean_std(values: list[float], fmt: str) -> str:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 1:
        return format(arr[0], fmt)
    return f"{format(arr.mean(), fmt)} ± {format(arr.std(), fmt.lstrip('+'))}"


def _extraction_by_copies(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per arm, extraction rate by the number of whole copies a canary had, means over seeds."""
    out: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        for copies, rate in row["extraction_by_copies"].items():
            out.setdefault(row["arm"], {}).setdefault(copies, []).append(rate)
    return {arm: {c: float(np.mean(v)) for c, v in rates.items()} for arm, rates in out.items()}


def _exposure_methods(rows: list[dict]) -> str:
    methods = [m for row in rows for m in row["exposure_methods"]]
    estimated = sum(m != "exact" for m in methods)
    if not estimated:
        return f"exact for all {len(methods)} canary evaluations (the whole secret space ranked)"
    return (
        f"{estimated} of {len(methods)} canary evaluations use the skew-normal estimate (space above "
        "--exposure_max_exact; intervals in each arm's eval/report.json), the rest are exact"
    )


def planted_table(scored) -> dict[str, dict[str, int]]:
    from hf_carto import Quadrant
    from hf_carto.curation import read_columns
    from hf_carto.packing import PLANTED_NAMES

    cols = read_columns(scored, ["truth", "carto_quadrant"])
    return {
        kind: {q.name.lower(): int(((cols["truth"] == k) & (cols["carto_quadrant"] == q)).sum()) for q in Quadrant}
        for k, kind in enumerate(PLANTED_NAMES)
        if (cols["truth"] == k).any()
    }


def format_markdown(report: dict) -> str:
    from hf_carto.comparison import COMPARED, METRICS, format_difference, units_on

    s = report["settings"]
    counts = report["data_counts"]
    lines = [
        "# GenDataCarto: GPT-2 leakage report",
        "",
        f"{report['num_blocks']:,} training blocks of {s['block_size']} tokens; T = {s['num_train_epochs']} epochs "
        f"with {s['snapshots_per_epoch']} eval-mode snapshot(s) each, burn-in T_e = {s['burn_in']} epoch(s); "
        f"eps {s['eps']}; seeds {s['seeds']}; {s['num_canaries']} canaries x {s['canary_repetitions']} copies "
        f"(secrets of {s['secret_length']} digits) and as many never-inserted control canaries; "
        f"{counts['contaminating']} held-out sequences inserted x {s['contamination_repetitions']} and "
        f"{counts['control']} never inserted (2k = {2 * s['contamination_k']} tokens from inside one document "
        f"each; {counts['heldout_documents_long_enough']} of {counts['heldout_documents']} held-out documents "
        f"were long enough). Planted blocks: {counts['planted_blocks']} ({counts['planted_share']:.1%} of the "
        "training blocks). Values are means over seeds ± standard deviation; membership columns use the "
        "loss signal, on the members every arm of the seed trained on and, separately, on the planted "
        "blocks against blocks built the same way from never-trained material.",
        "",
        "| arm | pruned weight | " + " | ".join(label for _, label, _ in METRICS) + " |",
        "|---|---:|" + "---:|" * len(METRICS),
    ]
    for arm, entry in report["summary"].items():
        cells = [_mean_std(entry[key]["values"], fmt) for key, _, fmt in METRICS]
        pruned = _mean_std(entry["fraction_pruned"]["values"], ".1%")
        lines.append(f"| {arm} | {pruned} | " + " | ".join(cells) + " |")
    floor = report["extraction_floor"]
    lines += [
        "",
        f"Never-inserted control canaries extracted: {floor['num_extracted']} of {floor['num_decoded']} "
        "decodings over every arm and seed (the floor of the extraction column). "
        f"Exposure: {report['exposure_methods']}.",
        "",
        "## Paired differences",
        "",
        "Per seed, arm minus control on the same units (canaries, sequences) from the same checkpoint with "
        "the same seed; 95% intervals (unit-level metrics: bootstrap over seeds and units; seed-level: "
        "paired t over seeds). A difference is called lower or higher only when its interval excludes zero. "
        "The noise floor is the mapping run's own final model against the no-intervention arm: they differ "
        "only in the data order of the continued epochs.",
        "",
        "| comparison | " + " | ".join(label for _, label, _, _ in COMPARED) + " |",
        "|---|" + "---|" * len(COMPARED),
    ]
    for name, metrics in report["comparisons"].items():
        cells = []
        for key, _, _, fmt in COMPARED:
            if key not in metrics:
                cells.append("")
                continue
            m = metrics[key]
            cells.append(f"{format_difference(m, fmt)}, {units_on(m)}: {m['verdict']}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    by_copies = report["extraction_by_copies"]
    copies = sorted({c for arm in by_copies.values() for c in arm}, key=int)
    if copies:
        lines += [
            "",
            "Extraction by the number of whole copies a canary had in the training blocks (the copies it can "
            "be learned from; a copy split across two blocks is in neither), means over seeds:",
            "",
            "| arm | " + " | ".join(f"{c} copies" for c in copies) + " |",
            "|---|" + "---:|" * len(copies),
        ]
        for arm, rates in by_copies.items():
            lines.append(f"| {arm} | " + " | ".join(f"{rates[c]:.1%}" if c in rates else "" for c in copies) + " |")
    lines += ["", f"**Reading:** {report['conclusion']}", "", "## Cartography", ""]
    for seed, c in report["cartography"].items():
        lines.append(
            f"- seed {seed}: {c['num_snapshots']} snapshots ({c['burn_in_snapshots']} in burn-in), eps = "
            f"{c['eps']:.4g}, tau_d = {c['tau_d']:.4g}, tau_m = {c['tau_m']:.4g}; {c['num_with_forget_events']} of "
            f"{c['num_samples']} blocks have a forget event; quadrants {c['quadrant_counts']}"
        )
        for cut in c["budget_cuts"]:
            lines.append(
                f"  - prune {cut['fraction']:g}: {cut['num_selected']} blocks cut at m = {cut['cut_value']:.3g}, "
                f"{cut['tied_selected']} of {cut['tied_at_cut']} tied blocks chosen by the tie-break"
            )
    first = next(iter(report["cartography"].values()))
    names = list(next(iter(first["planted_vs_quadrant"].values())))
    lines += ["", "Where planted blocks landed (first seed):", "", "| planted | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * len(names))
    for kind, row in first["planted_vs_quadrant"].items():
        lines.append(f"| {kind} | " + " | ".join(str(row[n]) for n in names) + " |")
    resumed = report["invocations"] > 1
    lines += [
        "",
        "## Time and memory",
        "",
        f"Stage times summed over the {report['invocations']} invocations of this run (stages read back cost "
        "nothing again):"
        if resumed
        else "Stage times:",
        "",
        report["stage_table"],
        "",
        f"Peak resident memory of the main process: {report['peak_rss_mib']:.0f} MiB"
        + (" (in this invocation)." if resumed else "."),
    ]
    return "\n".join(lines) + "\n"


def tradeoff_points(rows: list[dict]) -> list[dict]:
    """Points of Figures 1 and 2, one line per family; both pruning lines start at the
    no-intervention arm (nothing pruned) of the same seed. The per-quadrant rules prune a slightly
    different weight in each seed; their point sits at the mean over seeds."""
    points = []
    for row in rows:
        if row["arm"] == "mapping_run":
            continue
        points.append(dict(row, arm=row["family"]))
        if row["arm"] == "no_intervention":
            points += [dict(row, arm=family) for family in (PRUNED_FAMILY, RANDOM_PRUNED_FAMILY)]
    for name in ("gendatacarto", "random"):
        chosen = [p for p in points if p["arm"] == QUADRANT_FAMILIES[name]]
        mean = float(np.mean([p["fraction_pruned"] for p in chosen])) if chosen else 0.0
        for p in chosen:
            p["fraction_pruned"] = mean
    return points


def write_outputs(report: dict, seeds_data: dict, canaries, model_args, data_args, carto, training, out: Path) -> None:
    """Figures, the curated dataset (save_to_disk and Hub layout), the model card; push if asked."""
    from hf_carto import apply_interventions, cartography_summary, plot_tradeoffs, render_model_card
    from hf_carto.curation import read_columns
    from hf_carto.hub import export_hub_layout, push_curated_dataset, push_model
    from hf_carto.io import save_scored
    from hf_carto.plots import plot_data_map

    seed = carto.seeds[0]
    scored, fit = seeds_data[seed]
    cols = read_columns(scored, ["carto_difficulty", "carto_memorization", "carto_quadrant", "is_canary"])
    data_map = plot_data_map(
        cols["carto_difficulty"],
        cols["carto_memorization"],
        cols["carto_quadrant"],
        out / "data_map.png",
        tau_d=fit.tau_d,
        tau_m=fit.tau_m,
        num_snapshots=fit.num_snapshots,
        highlight=cols["is_canary"],
        highlight_label="canary blocks",
        title=f"Data map (seed {seed})",
    )
    plot_tradeoffs(tradeoff_points(report["rows"]), out)
    curated = apply_interventions(scored, gamma=carto.gamma, alpha=carto.alpha, remove_noisy=carto.remove_noisy)
    curated = curated.remove_columns("labels")  # the same tokens as input_ids
    save_scored(curated, out / "curated", fit=fit, summary=cartography_summary(curated, fit), overwrite=True)
    dataset_id = carto.hub_dataset_id or default_dataset_id(data_args)
    export_hub_layout(
        curated,
        out / "hub",
        repo_id=dataset_id,
        fit=fit,
        data_map=data_map,
        license=carto.license,
        secrets=[c.secret for c in canaries],
        overwrite=True,
    )
    model_id = training.hub_model_id or "your-name/gpt2-gendatacarto"
    from hf_carto.comparison import METRICS

    results = [
        {"arm": arm, **{key: entry[key]["values"] for key, _, _ in METRICS if key != "perplexity_change"}}
        for arm, entry in report["summary"].items()
    ]
    card = render_model_card(
        repo_id=model_id,
        base_model=model_args.model_name_or_path or f"{model_args.config_name} config, trained from scratch",
        dataset_id=dataset_id,
        curation={
            "burn-in (epochs)": carto.burn_in,
            "eps": carto.eps,
            "alpha_d / alpha_m": f"{carto.alpha_d} / {carto.alpha_m}",
            "hotspot loss weight": carto.alpha,
            "up-sampling of ambiguous-hard": carto.gamma,
            "remove noisy outliers": carto.remove_noisy,
            "seeds": carto.seeds,
        },
        results=results,
        k=data_args.contamination_k,
        conclusion=report["conclusion"],
        license=carto.license,
    )
    (out / "model_card.md").write_text(card)
    if training.push_to_hub:
        pushed = push_curated_dataset(out / "hub", dataset_id)
        model_dir = out / f"seed{seed}" / "arms" / "gendatacarto" / "model"
        model_pushed = push_model(model_dir, model_id, card)
        report["pushed"] = {"dataset": pushed.commit_url, "model": model_pushed.commit_url}
        print(f"pushed the dataset ({pushed.commit_url}) and the model ({model_pushed.commit_url})")


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    from accelerate import PartialState

    from hf_carto.comparison import compare_arms, leakage_row, reading, summarize

    model_args, data_args, carto, training = parse_arguments(argv)
    check_arguments(model_args, data_args, carto, training)
    check_inputs(data_args)  # on every process, before any of them waits for another
    if training.push_to_hub:
        from hf_carto.hub import check_repo_id

        if not (training.hub_model_id and carto.hub_dataset_id):
            raise SystemExit("--push_to_hub needs --hub_model_id and --hub_dataset_id")
        check_repo_id(training.hub_model_id)
        check_repo_id(carto.hub_dataset_id)
    state = PartialState(cpu=training.use_cpu)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    out = Path(training.output_dir)
    settings = run_settings(model_args, data_args, carto, training, state.num_processes)
    resuming = check_output_dir(out, settings, carto.overwrite_output_dir)
    state.wait_for_everyone()
    if state.is_main_process:
        if (carto.overwrite_output_dir or (out / PENDING_CONFIG).exists()) and out.exists() and not resuming:
            shutil.rmtree(out)  # discarded on request, or what a failed start left (see check_output_dir)
        out.mkdir(parents=True, exist_ok=True)
        if resuming:
            print(f"resuming the run in {out}: finished stages are read back, not redone")
        else:
            _write_json(out / PENDING_CONFIG, settings)
    state.wait_for_everyone()

    timer = StageTimer(out / "stage_times.json" if state.is_main_process else None)
    with timer("data"), state.main_process_first():
        tokenizer, blocks, canaries, eval_sets = prepare_data(model_args, data_args, out, state.is_main_process)
        if state.is_main_process:
            record_settings(out, settings)
    if state.is_main_process:
        print(f"{len(blocks):,} training blocks of {data_args.block_size} tokens, tokenizer of {len(tokenizer):,}")

    seeds_data, trained, member_masks = {}, {}, {}
    for seed in carto.seeds:
        seed_dir = out / f"seed{seed}"
        with timer("mapping"):
            mapping = mapping_run(seed, model_args, carto, training, blocks, tokenizer, seed_dir, state)
        with timer("scoring"), state.main_process_first():
            seeds_data[seed] = score_blocks(blocks, mapping, carto, seed_dir)
        scored, _ = seeds_data[seed]
        with timer("continuation"):
            arms = make_arms(scored, carto, seed)
            member_masks[seed] = trained_by_every_arm(arms, eval_sets["member_ids"])
            trained[seed] = {
                name: (family, train_arm(name, arm, mapping, training, carto, seed_dir / "arms" / name, seed, state))
                for name, (family, arm) in arms.items()
            }
        trained[seed]["_mapping"] = mapping
    state.wait_for_everyone()
    if not state.is_main_process:
        _leave_process_group()
        return None

    rows, cartography = [], {}
    for seed in carto.seeds:
        seed_dir = out / f"seed{seed}"
        mapping = trained[seed].pop("_mapping")
        with timer("evaluation"):
            reports = {
                name: evaluate(
                    seed_dir / "arms" / name / "model",
                    seed_dir / "arms" / name / "eval",
                    tokenizer,
                    canaries,
                    eval_sets,
                    data_args,
                    carto,
                    training,
                    seed,
                    member_masks[seed],
                )  # fmt: skip
                for name in trained[seed]
            }
            reports["mapping_run"] = evaluate(
                seed_dir / "mapping" / "final", seed_dir / "mapping" / "eval", tokenizer, canaries,
                eval_sets, data_args, carto, training, seed, member_masks[seed],
            )  # fmt: skip
        base = reports["no_intervention"]["validation"]["perplexity"]
        for name, report in reports.items():
            family, info = trained[seed].get(name, ("mapping run (T epochs, no intervention)", None))
            row = {"seed": seed, "arm": name, "family": family, **leakage_row(report)}
            row["fraction_pruned"] = info["budget"]["fraction_of_weight_pruned"] if info else 0.0
            row["perplexity_change"] = row["perplexity"] / base - 1.0
            row["steps"] = [info["start_step"], info["end_step"]] if info else [0, mapping["global_step"]]
            row["extraction_by_copies"] = report["canaries"].get("success_rate_by_copies", {})
            row["control_extraction"] = report["canaries"].get("control", {})
            row["exposure_methods"] = [c.get("exposure_method", "exact") for c in report["canaries"]["canaries"]]
            rows.append(row)
        scored, fit = seeds_data[seed]
        cartography[str(seed)] = _cartography_section(scored, fit, carto)

    summary = summarize([r for r in rows if r["arm"] != "mapping_run"])
    summary["mapping_run"] = summarize([r for r in rows if r["arm"] == "mapping_run"])["mapping_run"]
    comparisons = compare_arms(rows)
    report = {
        "settings": settings,
        "num_blocks": len(blocks),
        "data_counts": eval_sets["counts"],
        "rows": rows,
        "summary": summary,
        "comparisons": comparisons,
        "conclusion": reading(summary, comparisons),
        "extraction_by_copies": _extraction_by_copies(rows),
        "extraction_floor": {
            "num_extracted": sum(r["control_extraction"].get("num_extracted", 0) for r in rows),
            "num_decoded": sum(r["control_extraction"].get("num_canaries", 0) for r in rows),
        },
        "exposure_methods": _exposure_methods(rows),
        "cartography": cartography,
    }
    with timer("outputs"):
        write_outputs(report, seeds_data, canaries, model_args, data_args, carto, training, out)
    report["stage_seconds"] = timer.seconds  # this invocation
    report["stage_seconds_total"] = timer.total  # every invocation of this run
    report["invocations"] = timer.invocations
    report["stage_table"] = timer.table(timer.total)
    report["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write_json(out / "report.json", {k: v for k, v in report.items() if k != "stage_table"})
    text = format_markdown(report)
    (out / "report.md").write_text(text)
    print("\n" + text)
    print(f"report: {out / 'report.md'} (and report.json, figures, curated/, hub/, model_card.md)")
    _leave_process_group()
    return report


def _cartography_section(scored, fit, carto: CartoArguments) -> dict:
    from hf_carto import Quadrant, select_top_memorized
    from hf_carto.curation import read_columns

    cols = read_columns(scored, ["carto_memorization", "carto_difficulty", "sample_id", "carto_quadrant"])
    cuts = []
    for fraction in carto.prune_fractions:
        sel = select_top_memorized(
            cols["carto_memorization"], fraction, difficulty=cols["carto_difficulty"], sample_ids=cols["sample_id"]
        )
        cuts.append(
            {
                "fraction": fraction,
                "num_selected": sel.n_selected,
                "cut_value": sel.cut_value,
                "tied_at_cut": sel.n_tied_at_cut,
                "tied_selected": sel.n_tied_selected,
            }
        )
    return {
        "num_samples": fit.num_samples,
        "num_snapshots": fit.num_snapshots,
        "burn_in_snapshots": fit.burn_in,
        "eps": fit.eps,
        "tau_d": fit.tau_d,
        "tau_m": fit.tau_m,
        "num_with_forget_events": fit.num_with_forget_events,
        "quadrant_counts": {q.name.lower(): int((cols["carto_quadrant"] == q).sum()) for q in Quadrant},
        "budget_cuts": cuts,
        "planted_vs_quadrant": planted_table(scored),
    }


def _leave_process_group() -> None:
    # Leaving the process group to interpreter shutdown can abort gloo's worker threads.
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
