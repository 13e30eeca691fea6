"""Experiment 1 of the paper: canary extraction from a small LSTM language model, before and after
pruning the top 5% of samples by memorization, against pruning a random 5%.

    python recipes/lstm_canary.py --output_dir outputs/lstm_canary                 # one seed, CPU
    python recipes/lstm_canary.py --output_dir outputs/lstm_canary --seeds 0 1 2
    accelerate launch --multi_gpu --num_processes 2 recipes/lstm_canary.py --output_dir outputs/lstm_canary

Per seed: generate the corpus (ordinary documents, exact duplicates, canaries with distinct prefixes
and random secrets, noise) and hold out some ordinary documents; train a BPE tokenizer and an LSTM
language model for `epochs` epochs in a hand-written `accelerate` loop (1..N processes;
`batch_size` is per process), recording eval-mode loss snapshots of every sample with
`LossRecorder`; score memorization; from the epoch-`burn_in` checkpoint, continue the remaining
epochs in three arms that start from the same weights and optimizer state with the same seed:
`no_intervention`, `gendatacarto` (top `prune_fraction` by memorization removed) and `random` (the
same number of random samples removed). Report canary extraction and held-out perplexity of every
arm, and how well each quadrant recovers the planted duplicates, canaries and noise.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn


@dataclass
class LstmCanaryArguments:
    output_dir: str = field(default="outputs/lstm_canary", metadata={"help": "Where reports go."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One full experiment per seed."})
    num_documents: int = field(default=1500, metadata={"help": "Ordinary training documents (generated corpus)."})
    num_heldout: int = field(default=300, metadata={"help": "Ordinary documents held out for perplexity."})
    num_canaries: int = field(default=12, metadata={"help": "Canaries, each with its own prefix."})
    canary_repetitions: int = field(default=8, metadata={"help": "Copies of every canary in the corpus."})
    epochs: int = field(default=12, metadata={"help": "T: epochs of the mapping run (and of every arm in total)."})
    burn_in: int = field(default=6, metadata={"help": "T_e: the arms continue from the checkpoint after this epoch."})
    prune_fraction: float = field(default=0.05, metadata={"help": "Fraction of samples pruned in both arms."})
    eps: str = field(default="quantile:0.05", metadata={"help": "Forget threshold policy."})
    snapshots_per_epoch: int = field(
        default=1, metadata={"help": "Eval-mode loss snapshots per epoch; burn-in covers the first burn_in epochs."}
    )
    vocab_size: int = 512
    max_tokens: int = 64
    embedding_dim: int = 64
    hidden_dim: int = 256
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
        return self.head(self.lstm(self.embed(input_ids))[0])


class Documents(torch.utils.data.Dataset):
    """Token lists with their sample_ids; batches are right-padded by :func:`collate`."""

    def __init__(self, rows: list[list[int]], ids: np.ndarray) -> None:
        self.rows, self.ids = rows, ids

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return int(self.ids[i]), self.rows[i]


def collate(items: list[tuple[int, list[int]]]) -> dict[str, torch.Tensor]:
    from hf_carto.batching import right_pad

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


@torch.no_grad()
def extraction(model, tokenizer, canaries) -> dict:
    model.eval()
    hits = []
    for canary in canaries:
        prefix = tokenizer(tokenizer.eos_token + canary.prefix)["input_ids"]
        secret = tokenizer(tokenizer.eos_token + canary.text)["input_ids"][len(prefix) :]
        ids = list(prefix)
        for _ in range(len(secret)):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
        hits.append(ids[len(prefix) :] == secret)
    return {"success_rate": float(np.mean(hits)), "num_extracted": int(sum(hits)), "num_canaries": len(hits)}


@torch.no_grad()
def perplexity(model, rows) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(rows), 64):
        batch = collate(list(enumerate(rows[start : start + 64])))
        losses, counts = lstm_losses(model, batch)
        total += float((losses * counts).sum())
        count += int(counts.sum())
    return math.exp(total / count)


def planted_recovery(truth: np.ndarray, quadrants: np.ndarray, pruned: np.ndarray) -> dict:
    from hf_carto import Quadrant
    from hf_carto.data import TRUTH_NAMES

    out = {}
    for k, kind in enumerate(TRUTH_NAMES[1:], start=1):
        planted = truth == k
        row = {}
        for name, selected in [(q.name.lower(), quadrants == q) for q in Quadrant] + [("pruned", pruned)]:
            hit = int((planted & selected).sum())
            row[name] = {"precision": hit / max(int(selected.sum()), 1), "recall": hit / max(int(planted.sum()), 1)}
        out[kind] = row
    return out


def run_seed(args: LstmCanaryArguments, seed: int, out_dir: Path) -> dict:
    from accelerate import Accelerator

    from hf_carto import (
        LossRecorder,
        add_cartography,
        add_loss_columns,
        build_arms,
        fit_cartography,
        select_top_memorized,
    )
    from hf_carto.canaries import Canary
    from hf_carto.curation import read_columns
    from hf_carto.data import TRUTH_NAMES, CorpusConfig, generate_corpus, hold_out
    from hf_carto.demo import build_tokenizer

    torch.manual_seed(seed)
    # One corpus, split: the held-out documents share the training text's pseudo-word vocabulary.
    full = generate_corpus(
        CorpusConfig(
            num_documents=args.num_documents + args.num_heldout,
            num_canaries=args.num_canaries,
            canary_repetitions=(args.canary_repetitions,),
            seed=seed,
        )
    )
    corpus, heldout = hold_out(full, args.num_heldout, seed=seed)
    heldout = heldout["text"][:]
    texts = corpus["text"][:]
    tokenizer = build_tokenizer(texts, args.vocab_size)
    encode = lambda t: tokenizer(tokenizer.eos_token + t)["input_ids"][: args.max_tokens]  # noqa: E731
    rows, valid = [encode(t) for t in texts], [encode(t) for t in heldout]
    ids = np.arange(len(rows))
    canaries = []
    for row in corpus.to_list():
        if TRUTH_NAMES[row["truth"]] == "canary" and row["group"] not in {c.canary_id for c in canaries}:
            prefix, secret = row["text"].rsplit(" ", 1)
            canaries.append(Canary(row["group"], prefix, secret, "digits", row["repetitions"]))

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
    cols = read_columns(scored, ["truth", "carto_quadrant", "carto_memorization", "carto_difficulty", "sample_id"])
    pruned = ~np.asarray(arms["gendatacarto"]["carto_keep"][:])
    # The same selection build_arms made, kept for the report: how much of it memorization decided.
    cut = select_top_memorized(
        cols["carto_memorization"],
        args.prune_fraction,
        difficulty=cols["carto_difficulty"],
        sample_ids=cols["sample_id"],
    )
    result = {
        "seed": seed,
        "num_samples": len(rows),
        "num_with_forget_events": int((cols["carto_memorization"] > 0).sum()),
        "budget_cut": {
            "num_pruned": cut.n_selected,
            "memorization_at_cut": cut.cut_value,
            "tied_at_cut": cut.n_tied_at_cut,
            "chosen_by_tie_break": cut.n_tied_selected,
        },
        "mapping_run": {
            "extraction": extraction(mapping_model, tokenizer, canaries),
            "perplexity": perplexity(mapping_model, valid),
        },
        "planted_recovery": planted_recovery(cols["truth"], cols["carto_quadrant"], pruned),
        "arms": {},
    }
    for name, arm in arms.items():
        keep = np.asarray(arm["carto_keep"][:])
        model = LstmLanguageModel(len(tokenizer), args.embedding_dim, args.hidden_dim)
        model.load_state_dict(checkpoint["model"])
        optimizer = torch.optim.Adam(model.parameters(), lr=args.learning_rate)
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.manual_seed(seed)
        kept = Documents([rows[i] for i in np.flatnonzero(keep)], ids[keep])
        model = train_epochs(accelerator, model, optimizer, kept, args.epochs - args.burn_in, args, seed, args.burn_in)
        result["arms"][name] = {
            "num_pruned": int((~keep).sum()),
            "extraction": extraction(model, tokenizer, canaries),
            "perplexity": perplexity(model, valid),
        }
    return result


def summarize(results: list[dict]) -> dict:
    table = {}
    for arm in results[0]["arms"]:
        success = [r["arms"][arm]["extraction"]["success_rate"] for r in results]
        ppl = [r["arms"][arm]["perplexity"] for r in results]
        change = [r["arms"][arm]["perplexity"] / r["arms"]["no_intervention"]["perplexity"] - 1 for r in results]
        table[arm] = {
            "extraction_mean": float(np.mean(success)),
            "extraction_std": float(np.std(success)),
            "perplexity_mean": float(np.mean(ppl)),
            "perplexity_change_mean": float(np.mean(change)),
            "perplexity_change_std": float(np.std(change)),
        }
    return table


def format_report(args: LstmCanaryArguments, results: list[dict], table: dict) -> str:
    lines = [
        "# LSTM canary experiment",
        "",
        f"{len(results)} seed(s); {args.num_canaries} canaries x {args.canary_repetitions} copies; T = {args.epochs} "
        f"epochs with {args.snapshots_per_epoch} snapshot(s) each, T_e = {args.burn_in} epochs; "
        f"{args.prune_fraction:.0%} of samples pruned.",
        "",
        "| arm | canary extraction (mean ± std) | held-out perplexity | change vs no intervention |",
        "|---|---:|---:|---:|",
    ]
    for arm, row in table.items():
        lines.append(
            f"| {arm} | {row['extraction_mean']:.1%} ± {row['extraction_std']:.1%} | "
            f"{row['perplexity_mean']:.3f} | {row['perplexity_change_mean']:+.2%} ± "
            f"{row['perplexity_change_std']:.2%} |"
        )
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
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    from transformers import HfArgumentParser

    (args,) = HfArgumentParser(LstmCanaryArguments).parse_args_into_dataclasses(args=argv)
    if not 1 <= args.burn_in < args.epochs:
        raise SystemExit(f"burn_in must be in [1, epochs - 1] = [1, {args.epochs - 1}]; got {args.burn_in}")
    out_dir = Path(args.output_dir)
    results = [run_seed(args, seed, out_dir) for seed in args.seeds]
    table = summarize(results)
    report = {"arguments": asdict(args), "summary": table, "seeds": results}
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        # Every process evaluated the same models; one writes. Leaving the process group to
        # interpreter shutdown can abort gloo's worker threads.
        is_main = torch.distributed.get_rank() == 0
        torch.distributed.destroy_process_group()
        if not is_main:
            return report
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    text = format_report(args, results, table)
    (out_dir / "report.md").write_text(text)
    print(text)
    print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
