"""The experiment's arguments (three dataclasses beside ``transformers.TrainingArguments``), their
parsing with presets, and the checks that refuse a run that cannot work before any training step."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hf_carto.curation.policy import POLICIES
from hf_carto.experiment.errors import ExperimentError, InputDataError, SettingsError
from hf_carto.experiment.presets import COMMON, GENERATED, PRESETS
from hf_carto.score.detectors import detector_names


def list_option(help_text: str, default: list | None = None):
    """A list-valued option of the command line (``--name a b c``); each instance gets its own copy of
    ``default``."""
    return field(default_factory=lambda: list(default or []), metadata={"help": help_text})


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
    canary_repetitions: list[int] = list_option("Copies of each canary (cycled over the canaries).", default=[16, 64])
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
    preset: str | None = field(
        default=None,
        metadata={
            "help": "Defaults for a setting: "
            + ", ".join(PRESETS)
            + " (hf_carto.experiment.PRESET_ABOUT says what each is for)"
        },
    )
    seeds: list[int] = list_option("One mapping run and all arms per seed.", default=[0])
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
    prune_fractions: list[float] = list_option("Pruned fractions of the sweep (Figures 1 and 2).", default=[0.05, 0.1])
    downweight_fractions: list[float] = list_option(
        "Fractions of blocks whose loss weight becomes --alpha: one arm each (and per detector)."
    )
    detectors: list[str] = list_option(
        "Hotspot detectors (hf_carto.score.detectors: memorization, final_loss, loss_std, ...): for every "
        "prune and down-weighting fraction, one arm per detector plus the random arm, in place of the "
        "memorization sweep."
    )
    frontier_fractions: list[float] = list_option(
        "More pruning budgets for the frontier, each with an arm per --frontier_detectors and the "
        "random arm (the fewer detectors keep a seed's cost down)."
    )
    frontier_detectors: list[str] = list_option(
        "The detectors of the --frontier_fractions budgets (default: every one of --detectors)."
    )
    downweight_detectors: list[str] = list_option(
        "The detectors that get the down-weighting arms (default: every one of --detectors); the "
        "random arm is built in any case."
    )
    downweight_alpha: float | None = field(
        default=None,
        metadata={"help": "Loss weight of the down-weighted blocks of the budget arms (default: --alpha)."},
    )
    policy: str = field(
        default="recommended",
        metadata={
            "help": "The curation the curated dataset and the published model follow: recommended (the toolkit's "
            "default, hf_carto.RECOMMENDED) or paper (the per-quadrant rules with --alpha, --gamma, "
            "--remove_noisy). A policy's arm (and its random control) is trained if no other arm is it."
        },
    )
    dedup_arm: bool = field(
        default=False,
        metadata={
            "help": "Add deduplication as an arm: every block but the first of each exact or near-duplicate "
            "cluster (MinHash, carto_dup_*) is pruned, at the budget that makes, beside a random arm of that size."
        },
    )
    row_evidence: bool = field(
        default=True,
        metadata={
            # argparse formats help strings with %: a literal % is written %%.
            "help": "Leakage (carto_leak_*: k-extractability of each block's own continuation, loss, min-k%%++ under "
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


def command_line_parser(classes: tuple, defaults: dict | None = None):
    """An ``HfArgumentParser`` of ``classes`` whose usage errors (an unknown flag, a value of the
    wrong type) print one line and exit with argparse's status 2, as :func:`parse_command_line` does
    for flags it does not know."""
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message: str):
            # argparse prints the usage first; with every TrainingArguments flag it runs to a hundred
            # lines above the one that says what is wrong.
            self.exit(2, f"{self.prog}: error: {message} (every flag: --help)\n")

    parser = Parser(classes)
    if defaults:
        parser.set_defaults(**defaults)
    return parser


def parse_command_line(parser, argv: list[str] | None) -> tuple:
    """The dataclasses of ``parser`` (:func:`command_line_parser`) from ``argv``; an unknown flag is a
    usage error (status 2), where ``HfArgumentParser`` raises a ValueError with a traceback."""
    *parsed, remaining = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    if remaining:
        parser.error(f"unrecognized arguments: {' '.join(remaining)}")
    return tuple(parsed)


def run_command_line(main: Callable[[list[str] | None], object], argv: list[str] | None) -> int:
    """``main(argv)`` as a shell command: the exit status, 2 for a refusal.

    A refusal is an :class:`~hf_carto.experiment.errors.ExperimentError` (every check of the
    experiment raises one); it is printed alone, without a traceback, and gives 2, argparse's status
    for a command line that cannot run, so that a script or a launcher can tell it from a crash.
    """
    try:
        main(argv)
    except ExperimentError as refused:
        print(refused, file=sys.stderr, flush=True)
        return 2
    return 0


def _parser(defaults: dict):
    import dataclasses

    from transformers import TrainingArguments

    classes = (ModelArguments, DataArguments, CartoArguments, TrainingArguments)
    # HfArgumentParser names every argument after its dataclass field.
    fields = {f.name for cls in classes for f in dataclasses.fields(cls)}
    unknown = sorted(set(defaults) - fields)
    return command_line_parser(classes, defaults), unknown


def parse_arguments(argv: list[str] | None):
    """``(ModelArguments, DataArguments, CartoArguments, TrainingArguments)`` from the command line,
    the preset named by ``--preset`` (if any) giving the defaults.

    Every flag wins over the preset, the corpus included: ``--train_file`` with a preset that
    generates its corpus reads the file (``--dataset_name generated --train_file F``, both given,
    is refused as two corpora)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset", action="append", default=[])
    pre.add_argument("--train_file", default=None)
    pre.add_argument("--dataset_name", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    presets = list(dict.fromkeys(known.preset))
    if len(presets) > 1:
        raise SettingsError(
            f"--preset given twice ({', '.join(presets)}): a run takes one preset; keep one and set the "
            "other's values as flags"
        )
    preset = presets[0] if presets else None
    defaults = dict(COMMON)
    if preset is not None:
        if preset not in PRESETS:
            raise SettingsError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
        defaults.update(PRESETS[preset])
        if known.train_file is not None and not known.dataset_name and defaults.get("dataset_name") == GENERATED:
            defaults["dataset_name"] = None  # the file is the corpus; the preset's generated one is a default
    parser, unknown = _parser(defaults)
    if unknown:
        raise SettingsError(f"preset {preset!r} sets unknown arguments {unknown}")
    return parse_command_line(parser, argv)


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
            raise SettingsError(
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
        from hf_carto.record.recorder import check_snapshot_rows

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
    if carto.downweight_alpha is not None and not 0.0 < carto.downweight_alpha < 1.0:
        problems.append(f"downweight_alpha must lie in (0, 1); got {carto.downweight_alpha}")
    problems += _detector_problems(carto.detectors)

    if carto.policy not in POLICIES:
        problems.append(f"--policy {carto.policy!r}: choose one of {list(POLICIES)}")
    for option in ("downweight_detectors", "frontier_detectors"):
        outside = [d for d in getattr(carto, option) if d not in carto.detectors]
        if outside:
            problems.append(f"--{option} {outside} are not among --detectors {carto.detectors}")
    bad = [f for f in carto.frontier_fractions if not 0.0 < f < 1.0 or f in carto.prune_fractions]
    if bad:
        problems.append(f"frontier_fractions must lie in (0, 1) and differ from --prune_fractions; got {bad}")
    if carto.frontier_fractions and not carto.detectors:
        problems.append("--frontier_fractions needs --detectors")
    if carto.downweight_detectors and not carto.downweight_fractions:
        problems.append("--downweight_detectors needs --downweight_fractions")
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

    if not detectors:
        return []
    try:
        detector_names(detectors)
    except ValueError as err:
        return [f"--detectors: {err}"]
    return []


def hub_sources(model_args: ModelArguments, data_args: DataArguments) -> list[tuple[str, str, str]]:
    """What the run reads from the Hugging Face Hub: ``(flag, repository id, repository type)``."""
    sources = []
    name = data_args.dataset_name
    if data_args.train_file is None and name and name != GENERATED and not is_local(name):
        sources.append(("--dataset_name", name, "dataset"))
    model = model_args.model_name_or_path
    if model and not is_local(model):
        sources.append(("--model_name_or_path", model, "model"))
    elif not model and model_args.config_name not in (None, "gpt2") and not is_local(model_args.config_name):
        sources.append(("--config_name", model_args.config_name, "model"))  # "gpt2" is built, not read
    tokenizer = model_args.tokenizer_name
    if not model_args.train_tokenizer_vocab_size and tokenizer and not is_local(tokenizer) and tokenizer != model:
        sources.append(("--tokenizer_name", tokenizer, "model"))
    return sources


def _maybe_cached(repo_id: str, repo_type: str) -> bool:
    """Whether the local caches may hold ``repo_id``: a Hub cache folder of it, or (a dataset) a
    ``datasets`` cache folder. Generous on purpose (a renamed repository matches by its last name
    part): a false yes only lets the libraries try their cache, a false no would refuse a run that works."""
    from huggingface_hub import constants

    last = repo_id.split("/")[-1]
    hub = Path(constants.HF_HUB_CACHE)
    prefix = f"{repo_type}s--"
    if (hub / (prefix + repo_id.replace("/", "--"))).is_dir() or any(hub.glob(f"{prefix}*--{last}")):
        return True
    if repo_type == "dataset":
        import datasets.config

        cache = Path(datasets.config.HF_DATASETS_CACHE)
        return (cache / repo_id.replace("/", "___")).is_dir() or any(cache.glob(f"*___{last}"))
    return False


# How long the Hub gets to answer before a run that needs it is refused.
HUB_PROBE_SECONDS = 5.0


def _hub_unavailable(repo_types: set[str]) -> str | None:
    """Why the Hub cannot serve ``repo_types`` ("dataset", "model"), or None when it answers."""
    from huggingface_hub import constants

    if "model" in repo_types and constants.HF_HUB_OFFLINE:
        return "is switched off (HF_HUB_OFFLINE)"
    if "dataset" in repo_types:
        import datasets.config

        if datasets.config.HF_HUB_OFFLINE:
            return "is switched off (HF_HUB_OFFLINE)"
    from huggingface_hub.utils import get_session

    try:  # one request with a short timeout, where the libraries retry for a minute and more
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_SECONDS)
    except Exception as err:  # no answer: DNS, refused, timeout, proxy, TLS
        if getattr(err, "response", None) is not None:
            return None  # an HTTP error status is an answer: the Hub is there
        return f"cannot be reached at {constants.ENDPOINT} ({type(err).__name__})"
    return None


def check_hub_sources(model_args: ModelArguments, data_args: DataArguments) -> None:
    """Refuse, in seconds and in one line, a run that needs the Hugging Face Hub on a machine where
    it is off or out of reach and the local caches do not hold what the run reads, saying what runs
    without it. The libraries themselves would retry for a minute and more, then end in a traceback."""
    missing = [
        (flag, repo, kind) for flag, repo, kind in hub_sources(model_args, data_args) if not _maybe_cached(repo, kind)
    ]
    if not missing:
        return
    why = _hub_unavailable({kind for _, _, kind in missing})
    if why is None:
        return
    named = " and ".join(f"{flag} {repo}" for flag, repo, _ in missing)
    raise InputDataError(
        f"refusing to start: {named} come{'s' if len(missing) == 1 else ''} from the Hugging Face Hub, which {why}, "
        "and the local cache does not hold "
        f"{'it' if len(missing) == 1 else 'them'}. Without the Hub: `python recipes/gpt2_wikitext.py --preset "
        "cpu-demo` (the generated corpus), or your own text with --train_file FILE and a local tokenizer "
        "(--tokenizer_name FOLDER or --train_tokenizer_vocab_size N)"
    )


def check_arguments(model_args: ModelArguments, data_args: DataArguments, carto: CartoArguments, training) -> None:
    """Refuse settings that cannot work, each with a message that says which and why."""
    problems = _problems(model_args, data_args, carto, training)
    if problems:
        raise SettingsError("refusing to start:\n  - " + "\n  - ".join(problems))
    check_hub_sources(model_args, data_args)  # before model_config, which may read a config from the Hub
    config = model_config(model_args)
    context = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if context is not None and data_args.block_size > context:
        raise SettingsError(
            f"refusing to start: block_size {data_args.block_size} exceeds the model's context of {context} tokens"
        )
