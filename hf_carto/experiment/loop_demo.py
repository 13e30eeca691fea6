"""The default job: a real cartography run on the generated corpus, on CPU, in a few minutes.

Steps: generate the corpus with planted duplicates, canaries and noise; train a byte-level BPE
tokenizer on it; train a tiny GPT-2 from a config in a plain PyTorch loop; after every
``1 / snapshots_per_epoch`` of an epoch, record an eval-mode snapshot with :class:`LossRecorder`
(the paper's ``L[t, i]``, written to ``OUTPUT_DIR/run/carto``); merge the snapshots into
``carto_loss_{t}`` columns; then score, split into quadrants, label interventions, and compare the
quadrants with the planted ground truth. Every number printed comes from this run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset, Value
from tqdm.auto import tqdm

from hf_carto.core.batching import right_pad
from hf_carto.core.columns import (
    MAP_COLUMNS,
    PLANTED_NAMES,
    SAMPLE_ID,
    TRUTH,
    Quadrant,
    read_columns,
)
from hf_carto.core.locking import STAGING_SUFFIX, folder_lock, remove_stale_staging, replace_outputs
from hf_carto.core.models import tiny_gpt2
from hf_carto.core.plots import plot_data_map
from hf_carto.curation.interventions import apply_interventions
from hf_carto.data.generated import CorpusConfig, generate_corpus
from hf_carto.data.tokenization import train_bpe_tokenizer
from hf_carto.measure.leakage_columns import add_leakage_columns
from hf_carto.publish.interactive_map import write_interactive_map
from hf_carto.publish.privacy import mark_private
from hf_carto.publish.summary import cartography_summary, format_summary
from hf_carto.record.merge import add_loss_columns
from hf_carto.record.recorder import LossRecorder
from hf_carto.record.shards import read_records
from hf_carto.score.cartography import add_cartography, fit_cartography
from hf_carto.score.duplicates import add_duplicate_columns
from hf_carto.score.scored_io import save_scored
from hf_carto.score.scores import planted_vs_quadrant, select_top_memorized

__all__ = ["DemoConfig", "run_demo"]


logger = logging.getLogger(__name__)


@dataclass
class DemoConfig:
    """Settings of the default run. The defaults finish in a few minutes on 2 CPU cores."""

    output_dir: str = "outputs/demo"
    seed: int = 0
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    vocab_size: int = 1024  # byte-level BPE trained on the corpus
    block_size: int = 64  # documents are truncated to this many tokens (one sample = one document)
    n_layer: int = 2
    n_embd: int = 64
    n_head: int = 4
    epochs: int = 12
    snapshots_per_epoch: int = 2  # eval-mode loss snapshots per epoch; more snapshots, finer m
    batch_size: int = 32
    learning_rate: float = 3e-3
    burn_in: int | None = None  # snapshots averaged for difficulty; default: the first quarter
    eps: str = "quantile:0.05"
    alpha_d: float = 0.75
    alpha_m: float = 0.75
    gamma: float = 2.0
    alpha: float = 0.5
    budget: float = 0.05  # fraction reported for the top-by-memorization check
    overwrite: bool = True


def _encode(corpus: Dataset, tokenizer, block_size: int) -> Dataset:
    def encode(batch: dict[str, list]) -> dict[str, list]:
        # An end-of-text token first gives the first word a target too.
        ids = tokenizer([tokenizer.eos_token + t for t in batch["text"]], truncation=True, max_length=block_size)[
            "input_ids"
        ]
        return {"input_ids": ids}

    encoded = corpus.map(encode, batched=True, desc="Tokenizing")
    # sample_id is fixed here, before any shuffling: the row index of the unshuffled data.
    return encoded.add_column(SAMPLE_ID, np.arange(len(encoded), dtype=np.int64), feature=Value("int64"))


def _batches(input_ids: list[list[int]], order: np.ndarray, batch_size: int, pad_id: int):
    """Right-padded batches of whole documents, each with the ``sample_id`` of its rows."""
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = right_pad([input_ids[i] for i in rows], pad_id)
        yield {SAMPLE_ID: torch.as_tensor(rows, dtype=torch.long), **batch}


def _format_truth_table(table: dict[str, dict[str, int]]) -> str:
    names = Quadrant.names()
    header = f"{'planted':<10}" + "".join(f"{n:>19}" for n in names)
    lines = [header, "-" * len(header)]
    for kind, row in table.items():
        lines.append(f"{kind:<10}" + "".join(f"{row[n]:>19}" for n in names))
    return "\n".join(lines)


def _snapshot_steps(steps_per_epoch: int, snapshots_per_epoch: int) -> set[int]:
    """The steps of an epoch after which a snapshot is taken, evenly spaced, the last at its end."""
    return {math.ceil(steps_per_epoch * (k + 1) / snapshots_per_epoch) for k in range(snapshots_per_epoch)}


def _train_and_record(config: DemoConfig, model, tokenizer, input_ids, run_dir: Path, rng) -> tuple[list[float], int]:
    """The plain training loop with a :class:`LossRecorder` snapshot ``snapshots_per_epoch`` times
    an epoch; returns the training losses and the number of snapshots."""
    n = len(input_ids)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate)
    steps_per_epoch = math.ceil(n / config.batch_size)
    snapshot_steps = _snapshot_steps(steps_per_epoch, config.snapshots_per_epoch)
    recorder = LossRecorder(run_dir, "eval", num_samples=n, overwrite=True)
    recorder.start()
    snapshot_batches = list(_batches(input_ids, np.arange(n), config.batch_size * 4, tokenizer.pad_token_id))
    train_losses: list[float] = []
    global_step = 0
    model.train()
    for epoch in range(config.epochs):
        order = rng.permutation(n)
        bar = tqdm(
            _batches(input_ids, order, config.batch_size, tokenizer.pad_token_id),
            total=steps_per_epoch,
            desc=f"epoch {epoch + 1}/{config.epochs}",
        )
        for step, batch in enumerate(bar, start=1):
            batch.pop(SAMPLE_ID)
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            train_losses.append(loss.item())
            bar.set_postfix(loss=f"{train_losses[-1]:.3f}")
            if step in snapshot_steps:
                snapshot = len(recorder.store.completed()) + 1
                shard = recorder.eval_snapshot(
                    model, snapshot_batches, snapshot=snapshot, step=global_step, epoch=epoch + step / steps_per_epoch
                )
        last = read_records(shard)["loss"]
        print(f"epoch {epoch + 1}: mean eval-mode loss over all samples {last.mean():.3f}")
    recorder.close()
    return train_losses, len(recorder.store.completed())


def _top_counts(truth: np.ndarray, selection, planted: list[str], n: int) -> dict[str, Any]:
    """How many rows of each planted kind the top-by-memorization budget holds, and how its cut fell."""
    top = selection.mask(n)
    counts: dict[str, Any] = {
        kind: {
            "in_top": int((top & (truth == PLANTED_NAMES.index(kind))).sum()),
            "total": int((truth == PLANTED_NAMES.index(kind)).sum()),
        }
        for kind in planted
    }
    counts["cut"] = {
        "memorization": selection.cut_value,
        "tied_at_cut": selection.n_tied_at_cut,
        "tied_selected": selection.n_tied_selected,
    }
    return counts


def _print_report(report: dict[str, Any], config: DemoConfig, out_dir: Path) -> None:
    table = report["planted_vs_quadrant"]
    top_counts = report[f"planted_in_top_{config.budget:g}_by_memorization"]
    cut = top_counts["cut"]
    num_selected = sum(top_counts[k]["in_top"] for k in table)
    print()
    print(format_summary(report["summary"]))
    print()
    print("Where the planted samples landed:")
    print(_format_truth_table(table))
    print()
    print(
        f"Top {config.budget:.0%} by memorization ({num_selected} samples) holds: "
        + ", ".join(f"{top_counts[k]['in_top']}/{top_counts[k]['total']} {k}" for k in table)
    )
    print(
        f"  the cut fell at m = {cut['memorization']:.3g}: {cut['tied_selected']} of "
        f"{cut['tied_at_cut']} samples tied there were chosen by the tie-break (lower difficulty first)"
    )
    print(
        f"\nWrote {out_dir / 'scored'}, {out_dir / 'data_map.png'}, {out_dir / 'data_map.html'} (interactive) "
        f"and {out_dir / 'report.json'} "
        f"in {report['seconds']} s"
    )


def run_demo(config: DemoConfig | None = None) -> dict[str, Any]:
    """Run the default job end to end and write its outputs to ``config.output_dir``.

    Returns the report written to ``report.json``.
    """
    config = config or DemoConfig()
    out_dir = Path(config.output_dir)
    with folder_lock(out_dir, "hf-carto demo"):  # two demos into one folder would mix their runs
        if not config.overwrite and (out_dir / "scored").exists():
            raise FileExistsError(f"{out_dir / 'scored'} exists; set overwrite=True to replace the earlier run")
        remove_stale_staging(out_dir)  # what killed runs left; we hold the lock, so nobody else is writing
        # Everything is written beside the earlier run and replaces it only once complete: a run that
        # fails half-way (a full disk, a kill) leaves the earlier results whole.
        staging = out_dir / f".new-{os.getpid()}{STAGING_SUFFIX}"
        report = _run_demo(config, staging)
        replace_outputs(staging, out_dir)
        _print_report(report, config, out_dir)
        return report


def _run_demo(config: DemoConfig, out_dir: Path) -> dict[str, Any]:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)

    corpus = generate_corpus(config.corpus)
    tokenizer = train_bpe_tokenizer(corpus["text"], config.vocab_size)
    data = _encode(corpus, tokenizer, config.block_size)
    input_ids: list[list[int]] = data["input_ids"][:]
    n = len(input_ids)
    # No seed here: the weights come from the torch state seeded above, as every run always did.
    model = tiny_gpt2(
        len(tokenizer),
        n_layer=config.n_layer,
        n_embd=config.n_embd,
        n_head=config.n_head,
        n_positions=config.block_size,
        eos_token_id=tokenizer.eos_token_id,
    )
    num_params = sum(p.numel() for p in model.parameters())
    logger.info("corpus: %d samples, tokenizer: %d tokens, model: %d parameters", n, len(tokenizer), num_params)
    print(f"corpus: {n} samples | tokenizer: {len(tokenizer)} tokens | tiny GPT-2: {num_params:,} parameters")
    run_dir = out_dir / "run"
    train_losses, num_snapshots = _train_and_record(config, model, tokenizer, input_ids, run_dir, rng)

    data = add_loss_columns(data, run_dir, progress=False)
    burn_in = config.burn_in or max(1, num_snapshots // 4)
    fit = fit_cartography(data, burn_in=burn_in, eps=config.eps, alpha_d=config.alpha_d, alpha_m=config.alpha_m)
    scored = add_cartography(data, fit)
    scored = apply_interventions(scored, gamma=config.gamma, alpha=config.alpha)
    # Each sample's own leakage evidence under the trained model, and its duplicate clusters.
    scored = add_leakage_columns(
        scored, model, pad_token_id=tokenizer.pad_token_id or 0, batch_size=64, progress=False
    )
    scored = add_duplicate_columns(scored, "input_ids")
    summary = cartography_summary(scored, fit)

    cols = read_columns(scored, [TRUTH, *MAP_COLUMNS])
    truth, d, m, q = (cols[c] for c in (TRUTH, *MAP_COLUMNS))
    table = planted_vs_quadrant(truth, q)
    selection = select_top_memorized(m, config.budget, difficulty=d)
    report = {
        "config": asdict(config),
        "num_samples": n,
        "num_snapshots": num_snapshots,
        "final_train_loss": float(np.mean(train_losses[-math.ceil(n / config.batch_size) :])),
        "summary": summary,
        "planted_vs_quadrant": table,
        f"planted_in_top_{config.budget:g}_by_memorization": _top_counts(truth, selection, list(table), n),
        "seconds": round(time.perf_counter() - started, 1),
    }

    out_dir.mkdir(parents=True, exist_ok=True)
    save_scored(scored, out_dir / "scored", fit=fit, summary=summary)
    mark_private(out_dir / "scored", "every row of the generated corpus with its secrets and ground truth")
    mark_private(out_dir, "the generated corpus's canary secrets and ground truth (in scored/)")
    plot_data_map(
        d,
        m,
        q,
        out_dir / "data_map.png",
        tau_d=fit.tau_d,
        tau_m=fit.tau_m,
        num_snapshots=num_snapshots,
        highlight=truth == PLANTED_NAMES.index("canary"),
        highlight_label="planted canaries",
        title="Data map of the generated corpus (tiny GPT-2)",
    )
    write_interactive_map(
        scored, out_dir / "data_map.html", fit=fit, tokenizer=tokenizer, title="Data map of the generated corpus"
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
