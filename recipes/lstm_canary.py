"""Experiment 1 of the paper: canary extraction from a small LSTM language model, before and after
pruning the top 5% of samples by memorization, against pruning a random 5%.

    python recipes/lstm_canary.py --output_dir outputs/lstm_canary                    # one seed, CPU
    python recipes/lstm_canary.py --output_dir outputs/lstm_canary --seeds 0 1 2 3 4  # ~2 min a seed
    accelerate launch --multi_gpu --num_processes 2 recipes/lstm_canary.py --output_dir outputs/lstm_canary

Per seed: generate the corpus (ordinary documents, exact duplicates, noise) and hold out some
ordinary documents; insert canaries made by :func:`hf_carto.data.canaries.make_canaries` (each its own
prompt template and a random digit secret, copies cycled over `canary_repetitions`) as documents of
their own; train a BPE tokenizer and an LSTM language model for `epochs` epochs in a hand-written
`accelerate` loop (1..N processes; `batch_size` is per process), recording eval-mode loss
snapshots of every sample with `LossRecorder`; score memorization; from the epoch-`burn_in`
checkpoint, continue the remaining epochs in three arms that start from the same weights and
optimizer state with the same seed: `no_intervention`, `gendatacarto` (top `prune_fraction` by
memorization removed) and `random` (the same number of random samples removed).

Every arm is scored by plain greedy decoding from each canary's prompt, stopping at end-of-text,
compared by characters (:func:`hf_carto.measure.extraction.score_extraction`); never-inserted control
canaries, decoded the same way, give the extraction floor. With several seeds the report gives
paired differences (canary x seed for extraction, seed for relative held-out perplexity) with 95%
intervals. It also reports how well each quadrant recovers the planted duplicates, canaries and
noise, and which share of the training documents was planted.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

# Planted material (canaries, duplicates, noise) above this share of the training documents makes the
# corpus unlike the one the method is meant for, where memorized samples are rare.
MAX_PLANTED_SHARE = 0.05
# Tokens decoded past the secret's own: enough to see whether the model stops after the secret or
# runs on into a longer one ("1234" then "5" is not the secret "1234").
BOUNDARY_TOKENS = 2
# Added to the seed for the control canaries' draw: secrets independent of the inserted ones.
CONTROL_SEED_OFFSET = 10_000
# (arm, control) pairs reported as paired differences arm - control; each --detectors arm adds its own two.
COMPARISONS = (("gendatacarto", "random"), ("gendatacarto", "no_intervention"), ("random", "no_intervention"))


@dataclass
class LstmCanaryArguments:
    output_dir: str = field(default="outputs/lstm_canary", metadata={"help": "Where reports go."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One full experiment per seed."})
    num_documents: int = field(
        default=4500, metadata={"help": "Ordinary training documents (generated corpus), before planting."}
    )
    num_heldout: int = field(default=300, metadata={"help": "Ordinary documents held out for perplexity."})
    num_duplicate_groups: int = field(
        default=4, metadata={"help": "Generated documents copied 2, 4, 8 or 16 times (cycled over the groups)."}
    )
    num_noise_documents: int = field(default=10, metadata={"help": "Documents of random characters."})
    num_canaries: int = field(default=32, metadata={"help": "Inserted canaries, each with its own prompt template."})
    canary_repetitions: list[int] = field(
        default_factory=lambda: [1, 2, 4, 8, 16], metadata={"help": "Copies of each canary, cycled over the canaries."}
    )
    num_control_canaries: int = field(
        default=32, metadata={"help": "Never-inserted canaries (other templates): the extraction floor."}
    )
    secret_length: int = field(default=6, metadata={"help": "Digits in every canary's secret."})
    epochs: int = field(default=12, metadata={"help": "T: epochs of the mapping run (and of every arm in total)."})
    burn_in: int = field(default=6, metadata={"help": "T_e: the arms continue from the checkpoint after this epoch."})
    prune_fraction: float = field(default=0.05, metadata={"help": "Fraction of samples pruned in both arms."})
    detectors: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Hotspot detectors (hf_carto.score.detectors): one more arm each, pruning the top "
            "prune_fraction of "
            "its ranking, compared with the random arm."
        },
    )
    frontier_fractions: list[float] = field(
        default_factory=list,
        metadata={
            "help": "More pruning budgets for the budget frontier: at each, one arm per --frontier_detectors and "
            "a random arm of the same size (arms <detector>_prune<f>, random_prune<f>)."
        },
    )
    frontier_detectors: list[str] = field(
        default_factory=list,
        metadata={"help": "The detectors of the --frontier_fractions budgets (default: every one of --detectors)."},
    )
    eps: str = field(default="quantile:0.05", metadata={"help": "Forget threshold policy."})
    snapshots_per_epoch: int = field(
        default=1, metadata={"help": "Eval-mode loss snapshots per epoch; burn-in covers the first burn_in epochs."}
    )
    vocab_size: int = 512
    max_tokens: int = field(
        default=48, metadata={"help": "Tokens kept of each document, its two end-of-text tokens included."}
    )
    embedding_dim: int = 64
    hidden_dim: int = 128
    batch_size: int = 32
    learning_rate: float = 3e-3
    cpu: bool = field(default=True, metadata={"help": "Run on CPU even where a GPU is present."})


class LstmLanguageModel(nn.Module):
    def __init__(self, vocab_size: int, embedding_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_dim, batch_first=True)
        self.head = nn.Linear(hidden_dim, vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.step(input_ids)[0]

    def step(self, input_ids: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Logits of every position and the recurrent state after the last, to continue from."""
        output, state = self.lstm(self.embed(input_ids), state)
        return self.head(output), state


class Documents(torch.utils.data.Dataset):
    """Token lists with their sample_ids; batches are right-padded by :func:`collate`."""

    def __init__(self, rows: list[list[int]], ids: np.ndarray) -> None:
        self.rows, self.ids = rows, ids

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return int(self.ids[i]), self.rows[i]


def collate(items: list[tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
    from hf_carto.core.batching import right_pad

    return {"sample_id": torch.tensor([i for i, _ in items]), **right_pad([row for _, row in items])}


class EpochPermutation(torch.utils.data.Sampler[int]):
    """A new permutation each epoch from ``(seed, epoch)``: the same order on every process,
    whose batches ``accelerate`` then deals out."""

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed, self.epoch = size, seed, 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        return iter(np.random.default_rng([self.seed, self.epoch]).permutation(self.size).tolist())


def lstm_losses(model, batch):
    from hf_carto import per_sample_loss

    return per_sample_loss(model(batch["input_ids"]), batch["labels"], return_counts=True)


def train_epochs(accelerator, model, optimizer, data, epochs, args, seed, first_epoch, recorder=None, on_epoch=None):
    """Train ``epochs`` epochs from ``first_epoch``; snapshot after every 1/snapshots_per_epoch of each."""
    from torch.utils.data import DataLoader

    sampler = EpochPermutation(len(data), seed)
    train_loader = DataLoader(data, batch_size=args.batch_size, sampler=sampler, collate_fn=collate)
    snapshot_loader = DataLoader(data, batch_size=args.batch_size * 4, collate_fn=collate)
    model, optimizer, train_loader, snapshot_loader = accelerator.prepare(
        model, optimizer, train_loader, snapshot_loader
    )
    steps = len(train_loader)
    # Snapshot after the last step of each 1/snapshots_per_epoch of the epoch.
    snapshot_at = {math.ceil(steps * (k + 1) / args.snapshots_per_epoch) for k in range(args.snapshots_per_epoch)}
    for epoch in range(first_epoch, first_epoch + epochs):
        sampler.epoch = epoch
        model.train()
        for step, batch in enumerate(train_loader, start=1):
            batch.pop("sample_id")
            losses, counts = lstm_losses(model, batch)
            # The token mean over the global batch, as one process would compute it.
            total = accelerator.reduce(counts.sum().detach(), reduction="sum")
            loss = (losses * counts).sum() * accelerator.num_processes / total
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            if recorder is not None and step in snapshot_at:
                recorder.eval_snapshot(
                    accelerator.unwrap_model(model),
                    snapshot_loader,
                    snapshot=len(recorder.store.completed()) + 1,
                    step=epoch * steps + step,
                    epoch=epoch + step / steps,
                    loss_fn=lstm_losses,
                )
                model.train()
        if on_epoch is not None:
            on_epoch(epoch + 1, accelerator.unwrap_model(model), optimizer)
    return accelerator.unwrap_model(model)


def split_canary(tokenizer, canary) -> tuple[list[int], list[int]]:
    """The prompt's tokens (end-of-text, then the prefix, as a training document starts) and the
    secret's tokens after them, as the canary's document tokenizes."""
    prompt = tokenizer(tokenizer.eos_token + canary.prefix)["input_ids"]
    full = tokenizer(tokenizer.eos_token + canary.text)["input_ids"]
    if full[: len(prompt)] != prompt:
        raise ValueError(f"canary {canary.canary_id}: its prefix tokenizes differently inside the full text")
    return prompt, full[len(prompt) :]


@torch.no_grad()
def greedy_continuation(model, prompt: list[int], max_new_tokens: int, eos_token_id: int) -> tuple[list[int], bool]:
    """Plain greedy decoding, as an attacker would run it: the tokens before the first end-of-text
    (at most ``max_new_tokens``) and whether the model ended the text. The recurrent state is
    carried, so each new token costs one step."""
    device = next(model.parameters()).device
    logits, state = model.step(torch.tensor([prompt], device=device))
    tokens: list[int] = []
    for _ in range(max_new_tokens):
        token = int(logits[0, -1].argmax())
        if token == eos_token_id:
            return tokens, True
        tokens.append(token)
        logits, state = model.step(torch.tensor([[token]], device=device), state)
    return tokens, False


@torch.no_grad()
def extraction(model, tokenizer, canaries) -> dict:
    """Greedy continuation of every canary's prompt, up to its secret's token count plus
    ``BOUNDARY_TOKENS``, decoded to text and scored by characters."""
    from hf_carto.measure.extraction import score_extraction

    model.eval()
    texts, stopped = [], []
    for canary in canaries:
        prompt, secret = split_canary(tokenizer, canary)
        tokens, ended = greedy_continuation(model, prompt, len(secret) + BOUNDARY_TOKENS, tokenizer.eos_token_id)
        texts.append(tokenizer.decode(tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False))
        stopped.append(ended)
    return score_extraction(canaries, texts, stopped)


@torch.no_grad()
def perplexity(model, rows) -> float:
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(rows), 64):
        batch = collate(list(enumerate(rows[start : start + 64])))
        losses, counts = lstm_losses(model, {k: v.to(device) for k, v in batch.items()})
        total += float((losses * counts).sum())
        count += int(counts.sum())
    return math.exp(total / count)


def plant_canaries(corpus, canaries, seed: int):
    """``repetitions`` copies of every canary as documents of their own (truth ``canary``, ``group``
    its canary id), shuffled into the corpus; fills each canary's ``sample_ids`` with its rows."""
    from datasets import Dataset

    from hf_carto.core.columns import PLANTED_NAMES

    label = PLANTED_NAMES.index("canary")
    columns = corpus.to_dict()
    for canary in canaries:
        for _ in range(canary.repetitions):
            columns["text"].append(canary.text)
            columns["truth"].append(label)
            columns["group"].append(canary.canary_id)
            columns["repetitions"].append(canary.repetitions)
            columns["secret"].append(canary.secret)
    order = np.random.default_rng([seed, label]).permutation(len(columns["text"]))
    planted = Dataset.from_dict({k: [v[i] for i in order] for k, v in columns.items()}, features=corpus.features)
    truth, group = np.asarray(planted["truth"][:]), np.asarray(planted["group"][:])
    for canary in canaries:
        canary.sample_ids = np.flatnonzero((truth == label) & (group == canary.canary_id)).tolist()
    return planted


def build_corpus(args: LstmCanaryArguments, seed: int):
    """The training corpus with its canaries, the held-out texts, the canaries and the controls."""
    from hf_carto.data.canaries import make_canaries, unused_templates
    from hf_carto.data.generated import CorpusConfig, generate_corpus, hold_out

    # One corpus, split: the held-out documents share the training text's pseudo-word vocabulary.
    # The generator's own canaries all share one template; the canaries come from make_canaries.
    full = generate_corpus(
        CorpusConfig(
            num_documents=args.num_documents + args.num_heldout,
            num_duplicate_groups=args.num_duplicate_groups,
            num_canaries=0,
            num_noise_documents=args.num_noise_documents,
            seed=seed,
        )
    )
    corpus, heldout = hold_out(full, args.num_heldout, seed=seed)
    canaries = make_canaries(
        args.num_canaries, repetitions=args.canary_repetitions, secret_length=args.secret_length, seed=seed
    )
    controls = []
    if args.num_control_canaries > 0:
        controls = make_canaries(
            args.num_control_canaries,
            repetitions=[1],
            secret_length=args.secret_length,
            templates=unused_templates(canaries),
            seed=seed + CONTROL_SEED_OFFSET,
            first_id=args.num_canaries,
        )
    return plant_canaries(corpus, canaries, seed), heldout["text"][:], canaries, controls


def planted_recovery(truth: np.ndarray, quadrants: np.ndarray, pruned: np.ndarray) -> dict:
    """Per planted kind (duplicate, canary, noise): precision and recall of every quadrant and of
    the pruned set, from the one planted-vs-quadrant table."""
    from hf_carto.core.columns import PLANTED_NAMES
    from hf_carto.score.scores import planted_vs_quadrant

    table = planted_vs_quadrant(truth, quadrants)
    # Every block has one kind, so a quadrant's size is its column's total over the kinds.
    sizes = {name: sum(row[name] for row in table.values()) for name in next(iter(table.values()), {})}
    out = {}
    for kind, row in table.items():
        if kind == "ordinary":
            continue
        planted = truth == PLANTED_NAMES.index(kind)
        hits = dict(row, pruned=int((planted & pruned).sum()))
        selected = dict(sizes, pruned=int(pruned.sum()))
        out[kind] = {
            name: {"precision": hit / max(selected[name], 1), "recall": hit / max(int(planted.sum()), 1)}
            for name, hit in hits.items()
        }
    return out


def encode_documents(tokenizer, texts, heldout, canaries, max_tokens: int):
    """Training rows and held-out rows, each text between two end-of-text tokens and cut at
    ``max_tokens``; refuses a cut that would take part of a canary. Returns (rows, valid, cut)."""

    def encode(batch: list[str]) -> list[list[int]]:
        # End-of-text on both sides: the model learns where a text starts and where it ends, so
        # greedy decoding can stop after a secret. A document cut at max_tokens loses its last one.
        return tokenizer([tokenizer.eos_token + t + tokenizer.eos_token for t in batch])["input_ids"]

    whole = encode(texts)
    cut_canaries = sorted({c.canary_id for c in canaries for i in c.sample_ids if len(whole[i]) > max_tokens})
    if cut_canaries:
        # A cut canary document loses its end-of-text or its secret: the model could not learn it whole.
        raise ValueError(f"max_tokens={max_tokens} cuts the documents of canaries {cut_canaries}; raise it")
    num_truncated = sum(len(row) > max_tokens for row in whole)
    return [row[:max_tokens] for row in whole], [row[:max_tokens] for row in encode(heldout)], num_truncated


def continue_arm(accelerator, arm, rows, checkpoint: dict, vocab_size: int, args, seed: int):
    """One arm: the burn-in checkpoint's model and optimizer, trained the remaining epochs on the
    rows the arm keeps, with the seed every arm shares."""
    keep = np.asarray(arm["carto_keep"][:])
    model = LstmLanguageModel(vocab_size, args.embedding_dim, args.hidden_dim)
    model.load_state_dict(checkpoint["model"])
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    optimizer.load_state_dict(checkpoint["optimizer"])
    torch.manual_seed(seed)
    ids = np.arange(len(rows))
    kept = Documents([rows[i] for i in np.flatnonzero(keep)], ids[keep])
    model = train_epochs(accelerator, model, optimizer, kept, args.epochs - args.burn_in, args, seed, args.burn_in)
    return model, int((~keep).sum())


def detector_arms_and_quality(scored, fit, args: LstmCanaryArguments, seed: int) -> tuple[dict, dict]:
    """How well every detector finds the canary documents (:func:`hf_carto.detection_quality`: AP,
    precision and recall at the prune fraction), and one pruning arm per ``--detectors`` name (the
    top ``prune_fraction`` of its ranking, as many rows as the other arms prune; ``random`` names
    the recipe's random arm, which exists anyway)."""
    from hf_carto import add_detector_scores, build_detector_arms, dataset_detection_quality
    from hf_carto.core.columns import PLANTED_NAMES

    # Every canary document holds a whole copy: its canary id marks both detection targets.
    canary = np.asarray(scored["truth"][:]) == PLANTED_NAMES.index("canary")
    canary_ids = np.where(canary, np.asarray(scored["group"][:]), -1)
    with_scores = add_detector_scores(
        scored.add_column("carto_canary_id", canary_ids), eps=fit.eps, burn_in=fit.burn_in, seed=seed,
        keep_in_memory=True,
    )  # fmt: skip
    detection = dataset_detection_quality(with_scores, [args.prune_fraction])
    names = [n for n in args.detectors if n != "random"]
    if not names:
        return detection, {}
    built = build_detector_arms(with_scores, names, budget=args.prune_fraction, alpha=0.0)
    arms = {name: built[name] for name in names}
    frontier = [n for n in (args.frontier_detectors or names) if n != "random"]
    for fraction in args.frontier_fractions:  # the frontier's other budgets, each with its random arm
        built = build_detector_arms(with_scores, frontier, budget=fraction, alpha=0.0)
        arms.update({f"{name}_prune{fraction:g}": arm for name, arm in built.items()})
    return detection, arms


def run_seed(args: LstmCanaryArguments, seed: int, out_dir: Path) -> dict:
    """One seed: corpus, tokenizer, mapping run with recording, scores, the three arms, evaluation."""
    from accelerate import Accelerator

    from hf_carto import LossRecorder, add_cartography, add_loss_columns, build_arms, fit_cartography
    from hf_carto.core.columns import PLANTED_NAMES, read_columns
    from hf_carto.data.tokenization import train_bpe_tokenizer

    torch.manual_seed(seed)
    corpus, heldout, canaries, controls = build_corpus(args, seed)
    texts = corpus["text"][:]
    truth = np.asarray(corpus["truth"][:])
    planted_share = float((truth != PLANTED_NAMES.index("ordinary")).mean())
    if planted_share > MAX_PLANTED_SHARE:
        warnings.warn(
            f"seed {seed}: {planted_share:.1%} of the training documents are planted (canaries, duplicates, "
            f"noise), more than {MAX_PLANTED_SHARE:.0%}; raise num_documents or plant less",
            stacklevel=2,
        )
    tokenizer = train_bpe_tokenizer(texts, args.vocab_size)
    rows, valid, num_truncated = encode_documents(tokenizer, texts, heldout, canaries, args.max_tokens)
    ids = np.arange(len(rows))

    def evaluate(model) -> dict:
        out = {"extraction": extraction(model, tokenizer, canaries)}
        if controls:
            out["control_extraction"] = extraction(model, tokenizer, controls)
        out["perplexity"] = perplexity(model, valid)
        return out

    accelerator = Accelerator(cpu=args.cpu)
    model = LstmLanguageModel(len(tokenizer), args.embedding_dim, args.hidden_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
    checkpoint = {}

    def keep_checkpoint(epoch, unwrapped, opt):
        if epoch == args.burn_in:
            checkpoint.update(model=copy.deepcopy(unwrapped.state_dict()), optimizer=copy.deepcopy(opt.state_dict()))

    run_dir = out_dir / f"seed{seed}" / "mapping"
    recorder = LossRecorder(
        run_dir, "eval", num_samples=len(rows), overwrite=True, progress=False, accelerator=accelerator
    )
    recorder.start()
    mapping_model = train_epochs(
        accelerator, model, optimizer, Documents(rows, ids), args.epochs, args, seed, 0, recorder, keep_checkpoint
    )

    data = add_loss_columns(corpus.add_column("sample_id", ids), run_dir, progress=False)
    fit = fit_cartography(data, burn_in=args.burn_in * args.snapshots_per_epoch, eps=args.eps)
    scored = add_cartography(data, fit)
    arms = build_arms(scored, budget=args.prune_fraction, alpha=0.0, seed=seed)
    cut = arms.selection  # the cut build_arms made, kept for the report: how much memorization decided
    detection, detector_arms = detector_arms_and_quality(scored, fit, args, seed)
    arms = {**arms, **detector_arms}
    cols = read_columns(scored, ["truth", "carto_quadrant", "carto_memorization"])
    pruned = ~np.asarray(arms["gendatacarto"]["carto_keep"][:])
    result = {
        "seed": seed,
        "num_samples": len(rows),
        "planted": {kind: int((truth == k).sum()) for k, kind in enumerate(PLANTED_NAMES) if k and (truth == k).any()},
        "planted_share": planted_share,
        "num_truncated": num_truncated,
        "num_with_forget_events": int((cols["carto_memorization"] > 0).sum()),
        "budget_cut": {
            "num_pruned": cut.n_selected,
            "memorization_at_cut": cut.cut_value,
            "tied_at_cut": cut.n_tied_at_cut,
            "chosen_by_tie_break": cut.n_tied_selected,
        },
        "mapping_run": evaluate(mapping_model),
        "planted_recovery": planted_recovery(cols["truth"], cols["carto_quadrant"], pruned),
        "detection": detection,
        "arms": {},
    }
    for name, arm in arms.items():
        model, num_pruned = continue_arm(accelerator, arm, rows, checkpoint, len(tokenizer), args, seed)
        result["arms"][name] = {"num_pruned": num_pruned, **evaluate(model)}
    return result


def _success(results: list[dict], arm: str, key: str) -> list[float]:
    return [r["arms"][arm][key]["success_rate"] for r in results if key in r["arms"][arm]]


def summarize(results: list[dict]) -> dict:
    table = {}
    for arm in results[0]["arms"]:
        success = _success(results, arm, "extraction")
        controls = _success(results, arm, "control_extraction")
        ppl = [r["arms"][arm]["perplexity"] for r in results]
        change = [r["arms"][arm]["perplexity"] / r["arms"]["no_intervention"]["perplexity"] - 1 for r in results]
        table[arm] = {
            "extraction_mean": float(np.mean(success)),
            "extraction_std": float(np.std(success)),
            "control_extraction_mean": float(np.mean(controls)) if controls else None,
            "control_extraction_std": float(np.std(controls)) if controls else None,
            "perplexity_mean": float(np.mean(ppl)),
            "perplexity_change_mean": float(np.mean(change)),
            "perplexity_change_std": float(np.std(change)),
        }
    return table


# The metrics compared between arms: extraction on canary x seed units (the arms of a seed are
# scored on the same canaries), held-out perplexity as the relative change per seed.
COMPARED = [
    ("extraction_success", "canary extraction", "canaries", "+.1%"),
    ("perplexity", "held-out perplexity (relative)", None, "+.2%"),
]


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per (seed, arm) in the shape :mod:`hf_carto.measure.comparison` compares."""
    return [
        {
            "seed": r["seed"],
            "arm": arm,
            "extraction_success": a["extraction"]["success_rate"],
            "perplexity": a["perplexity"],
            "units": {"extraction_success": [float(row["extracted"]) for row in a["extraction"]["canaries"]]},
        }
        for r in results
        for arm, a in r["arms"].items()
    ]


def compare_arms(results: list[dict]) -> dict:
    """Paired differences ``arm - control`` with 95% intervals (:func:`hf_carto.measure.comparison.compare`)."""
    from hf_carto.measure.comparison import compare

    rows = comparison_rows(results)
    out = {}
    from hf_carto.measure.comparison import budget_suffix, control_of

    detector_arms = [a for a in results[0]["arms"] if a not in ("no_intervention", "gendatacarto", "random")]
    pairs = list(COMPARISONS)
    for arm in detector_arms:  # an arm of a frontier budget has the random arm of its own budget as control
        if budget_suffix(arm) is None:
            pairs += [(arm, "random"), (arm, "no_intervention")]
        elif arm.startswith("random"):
            pairs.append((arm, "no_intervention"))
        else:
            pairs += [(arm, control_of(arm)), (arm, "no_intervention")]
    for arm, control in pairs:
        c = compare(rows, arm, control, metrics=COMPARED, name_control=True)
        out[f"{arm} vs {control}"] = {"extraction": c["extraction_success"], "perplexity_relative": c["perplexity"]}
    return out


def frontier_view(args: LstmCanaryArguments, results: list[dict], comparisons: dict) -> dict:
    """The runs in the shape :mod:`hf_carto.measure.frontier` reads (``summary``, ``comparisons``,
    ``rows``), every pruning arm named by its budget: the arms at ``--prune_fraction`` become
    ``<detector>_prune<f>``, the paper's cut ``gendatacarto_prune<f>``, random ``random_prune<f>``."""
    from hf_carto.measure.comparison import budget_suffix

    main = f"_prune{args.prune_fraction:g}"

    def name(arm: str) -> str:
        if arm == "no_intervention" or budget_suffix(arm):
            return arm
        return arm + main

    summary, rows = {}, []
    for arm in results[0]["arms"]:
        success = _success(results, arm, "extraction")
        change = [r["arms"][arm]["perplexity"] / r["arms"]["no_intervention"]["perplexity"] - 1 for r in results]
        pruned = [r["arms"][arm]["num_pruned"] / r["num_samples"] for r in results]
        summary[name(arm)] = {
            "seeds": [r["seed"] for r in results],
            "fraction_pruned": {"mean": float(np.mean(pruned))},
            "extraction_success": {"mean": float(np.mean(success))},
            "perplexity_change": {"mean": float(np.mean(change))},
        }
        family = "no_intervention" if arm == "no_intervention" else arm.split("_prune")[0]
        family = "memorization (the paper's cut)" if family == "gendatacarto" else family
        rows.append({"arm": name(arm), "family": family if family == "no_intervention" else f"{family} (pruned)"})
    renamed = {}
    for key, value in comparisons.items():
        arm, control = key.split(" vs ")
        metrics = {"extraction_success": value["extraction"], "perplexity": value["perplexity_relative"]}
        renamed[f"{name(arm)} vs {name(control)}"] = metrics
    return {"summary": summary, "comparisons": renamed, "rows": rows, "settings": {"alpha": 0.0}}


def write_frontier(args: LstmCanaryArguments, results: list[dict], comparisons: dict, out_dir: Path) -> dict | None:
    """``frontier_extraction.png`` and the recommendation (:func:`hf_carto.measure.frontier.recommend_policy`)
    when the run has more than one pruning budget; None otherwise."""
    from hf_carto.measure.frontier import frontier_points, plot_frontier, recommend_policy

    if not args.frontier_fractions:
        return None
    view = frontier_view(args, results, comparisons)
    plot_frontier(frontier_points(view), out_dir / "frontier_extraction.png")
    return recommend_policy(view)


def _frontier_lines(recommendation: dict | None) -> list[str]:
    if recommendation is None:
        return []
    figure = (
        "`frontier_extraction.png`: extraction against held-out perplexity change, a panel per detector with "
        "its line through its budgets beside random at the same budgets, bars the paired 95% intervals "
        "against no intervention."
    )
    lines = ["", "## Budget frontier", "", figure, ""]
    if recommendation["policy"] is None:
        lines.append(f"Recommended policy: none ({recommendation['reason']}).")
    else:
        point, policy = recommendation["point"], recommendation["policy"]
        lines.append(
            f"Recommended policy (largest measured extraction reduction at <= 1% perplexity cost): prune the top "
            f"{policy['budget']:.0%} by {policy['detector']}: extraction "
            f"{recommendation['no_intervention_extraction']:.1%} -> {point['extraction_success']:.1%} "
            f"({recommendation['relative_reduction']:.0%} fewer), perplexity {point['perplexity_change']:+.2%}."
        )
    return lines


def _by_repetitions(results: list[dict], arm: str) -> dict[str, float]:
    """Seed-averaged extraction rate per copy count."""
    rates = [r["arms"][arm]["extraction"]["success_rate_by_repetitions"] for r in results]
    return {k: float(np.mean([rate[k] for rate in rates])) for k in rates[0]}


def _comparisons_and_cuts(results: list[dict], comparisons: dict) -> list[str]:
    """The paired-differences table, the forget-event counts and how each pruning cut was decided."""
    from hf_carto.measure.comparison import format_difference

    lines: list[str] = []
    first = next(iter(comparisons.values()))
    lines += [
        "",
        "## Paired differences",
        "",
        f"Arm minus control with 95% intervals: extraction over {first['extraction']['num_seeds']} seed(s) x "
        f"{first['extraction']['num_units']} canaries ({first['extraction']['method']}); held-out perplexity as "
        f"the relative change per seed ({first['perplexity_relative']['method']}). A verdict other than "
        '"no measurable difference" needs an interval that excludes zero.',
        "",
        "| comparison | canary extraction | verdict | held-out perplexity (relative) | verdict |",
        "|---|---:|---|---:|---|",
    ]
    for name, c in comparisons.items():
        ext, ppl = c["extraction"], c["perplexity_relative"]
        cells = [name, format_difference(ext, "+.1%"), ext["verdict"], format_difference(ppl, "+.2%"), ppl["verdict"]]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Samples with any forget event: "
        + ", ".join(f"seed {r['seed']}: {r['num_with_forget_events']}/{r['num_samples']}" for r in results),
        "",
    ]
    for r in results:
        cut = r["budget_cut"]
        lines.append(
            f"- seed {r['seed']}: the {cut['num_pruned']} pruned samples were cut at memorization "
            f"{cut['memorization_at_cut']:.3g}; {cut['chosen_by_tie_break']} of them were chosen among "
            f"{cut['tied_at_cut']} tied samples by the tie-break (lower difficulty first)"
        )
    if any(r["budget_cut"]["memorization_at_cut"] == 0 for r in results):
        lines += [
            "",
            "**Memorization did not decide the pruned set** where the cut is at memorization 0: those "
            "samples were chosen by the difficulty tie-break, so the gendatacarto arm there measures pruning "
            "the easiest samples, not the most forgotten ones.",
        ]
    lines.append("")
    lines += ["Planted samples among the pruned (seed-averaged recall):", ""]
    for kind in results[0]["planted_recovery"]:
        recall = np.mean([r["planted_recovery"][kind]["pruned"]["recall"] for r in results])
        lines.append(f"- {kind}: {recall:.1%} of the planted rows were pruned")
    return lines


def _detection_lines(results: list[dict]) -> list[str]:
    """Each detector's AP over its whole ranking and precision/recall of its pruned cut, against the
    canary documents, means over seeds."""
    entries = [r["detection"]["planted"] for r in results]
    fraction = entries[0]["detectors"]["random"]["at_budget"][0]["fraction"]
    lines = [
        "",
        "## Which documents the detectors find",
        "",
        f"Each detector ranks every document (higher = prune first, ties by sample_id); AP over the whole "
        f"ranking, precision and recall of its top {fraction:g} against the {entries[0]['num_positive']} canary "
        f"documents (base rate {entries[0]['base_rate']:.3f}); means over seeds.",
        "",
        f"| detector | AP | P@{fraction:g} | R@{fraction:g} |",
        "|---|---:|---:|---:|",
    ]
    for name in entries[0]["detectors"]:
        ap = np.mean([e["detectors"][name]["average_precision"] for e in entries])
        at = [e["detectors"][name]["at_budget"][0] for e in entries]
        precision, recall = np.mean([a["precision"] for a in at]), np.mean([a["recall"] for a in at])
        lines.append(f"| {name} | {ap:.3f} | {precision:.2f} | {recall:.2f} |")
    return lines


def format_report(args: LstmCanaryArguments, results: list[dict], table: dict, comparisons: dict) -> str:
    copies = ", ".join(str(r) for r in args.canary_repetitions)
    shares = [r["planted_share"] for r in results]
    lines = [
        "# LSTM canary experiment",
        "",
        f"{len(results)} seed(s); {args.num_canaries} canaries, each with its own prompt template, "
        f"{args.secret_length}-digit secrets, inserted {copies} times (cycled over the canaries); "
        f"{args.num_control_canaries} never-inserted control canaries; T = {args.epochs} epochs with "
        f"{args.snapshots_per_epoch} snapshot(s) each, T_e = {args.burn_in} epochs; "
        f"{args.prune_fraction:.0%} of samples pruned.",
        "",
        f"Training documents: {results[0]['num_samples']}, of which {min(shares):.2%}"
        + (f" to {max(shares):.2%}" if max(shares) > min(shares) else "")
        + " planted ("
        + ", ".join(f"{n} {kind}" for kind, n in results[0]["planted"].items())
        + f" in seed {results[0]['seed']}); {results[0]['num_truncated']} documents longer than "
        f"{args.max_tokens} tokens were cut.",
        "",
    ]
    if max(shares) > MAX_PLANTED_SHARE:
        lines += [f"**Warning**: more than {MAX_PLANTED_SHARE:.0%} of the training documents are planted.", ""]
    lines += [
        "Extraction: plain greedy decoding from the canary's prompt, stopping at end-of-text, up to the "
        f"secret's token count + {BOUNDARY_TOKENS}; extracted when the continuation spells the secret and "
        "does not lengthen it. The control canaries were never trained on: their extraction is the floor.",
        "",
        "| arm | canary extraction (mean ± std) | control extraction (floor) | held-out perplexity | "
        "change vs no intervention |",
        "|---|---:|---:|---:|---:|",
    ]
    for arm, row in table.items():
        floor = (
            "n/a"
            if row["control_extraction_mean"] is None
            else f"{row['control_extraction_mean']:.1%} ± {row['control_extraction_std']:.1%}"
        )
        lines.append(
            f"| {arm} | {row['extraction_mean']:.1%} ± {row['extraction_std']:.1%} | {floor} | "
            f"{row['perplexity_mean']:.3f} | {row['perplexity_change_mean']:+.2%} ± "
            f"{row['perplexity_change_std']:.2%} |"
        )
    reps = list(_by_repetitions(results, "no_intervention"))
    lines += [
        "",
        "Extraction by copies in the corpus (seed-averaged):",
        "",
        "| arm | " + " | ".join(f"{r}x" for r in reps) + " |",
        "|---|" + "---:|" * len(reps),
    ]
    for arm in table:
        by = _by_repetitions(results, arm)
        lines.append(f"| {arm} | " + " | ".join(f"{by[r]:.0%}" for r in reps) + " |")
    if table["no_intervention"]["extraction_mean"] == 0:
        lines += [
            "",
            "**The no-intervention arm extracts no canary**, so this run cannot show a reduction in extraction.",
        ]
    lines += _comparisons_and_cuts(results, comparisons) + _detection_lines(results)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from hf_carto.experiment.arguments import command_line_parser, parse_command_line
    from hf_carto.experiment.errors import SettingsError

    (args,) = parse_command_line(command_line_parser((LstmCanaryArguments,)), argv)
    if not 1 <= args.burn_in < args.epochs:
        raise SettingsError(f"burn_in must be in [1, epochs - 1] = [1, {args.epochs - 1}]; got {args.burn_in}")
    if args.detectors:
        from hf_carto.score.detectors import detector_names

        try:
            detector_names(args.detectors)
        except ValueError as err:
            raise SettingsError(f"--detectors: {err}") from None
    outside = [d for d in args.frontier_detectors if d not in args.detectors]
    if outside:
        raise SettingsError(f"--frontier_detectors {outside} are not among --detectors {args.detectors}")
    bad = [f for f in args.frontier_fractions if not 0 < f < 1 or f == args.prune_fraction]
    if bad or (args.frontier_fractions and not args.detectors):
        raise SettingsError(
            f"--frontier_fractions must lie in (0, 1), differ from --prune_fraction and come with --detectors; "
            f"got {args.frontier_fractions}"
        )
    out_dir = Path(args.output_dir)
    results = [run_seed(args, seed, out_dir) for seed in args.seeds]
    table = summarize(results)
    comparisons = compare_arms(results)
    report = {"arguments": asdict(args), "summary": table, "paired_differences": comparisons, "seeds": results}
    out_dir.mkdir(parents=True, exist_ok=True)
    report["recommendation"] = write_frontier(args, results, comparisons, out_dir)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every process evaluated the same models; one writes. Leaving the process group to
        # interpreter shutdown can abort gloo's worker threads.
        is_main = torch.distributed.get_rank() == 0
        torch.distributed.destroy_process_group()
        if not is_main:
            return report
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = format_report(args, results, table, comparisons) + "\n".join(_frontier_lines(report["recommendation"]))
    (out_dir / "report.md").write_text(text)
    print(text)
    print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}")
    return report


if __name__ == "__main__":
    from hf_carto.experiment.arguments import run_command_line

    sys.exit(run_command_line(main, sys.argv[1:]))  # a refusal: its message alone, status 2
