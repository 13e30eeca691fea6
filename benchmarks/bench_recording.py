"""Cost of recording per-sample losses, against baselines run in the same process.

    python benchmarks/bench_recording.py [--repeats 5] [--merge-samples 1000000]

1. train mode: `RecordingTrainer(recording="train")` vs the plain `Trainer`, same model, data and
   seed, repetitions interleaved (A B A B ...); target ratio <= 1.03.
2. eval mode: one recorded snapshot (`LossRecorder.eval_snapshot`, shard write included) vs a bare
   `torch.no_grad()` forward loop with labels over the same batches; target ratio <= 1.10.
3. merge: 2 ranks x 8 snapshots of `--merge-samples` samples with padding duplicates, merged into
   the (N, 8) matrix; seconds and peak resident growth.

Ratios are medians over the repetitions; compare ratios, not seconds, across machines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def tiny_setup(num_samples: int, block: int, vocab: int):
    from datasets import Dataset

    from hf_carto.core.models import tiny_gpt2

    rng = np.random.default_rng(0)
    ids = rng.integers(0, vocab, size=(num_samples, block)).tolist()
    dataset = Dataset.from_dict({"input_ids": ids, "labels": ids, "sample_id": np.arange(num_samples)})

    def model():
        return tiny_gpt2(vocab, n_positions=block, n_embd=128, n_layer=2, n_head=4, eos_token_id=0, seed=0)

    return dataset, model


def collate(rows):
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def report(
    case: str, base_name: str, new_name: str, base: list[float], new: list[float], target: float, what: str
) -> None:
    """Print the median of paired ratios and the ratio of best times (the least noisy estimate)."""
    ratios = [b / a for a, b in zip(base, new, strict=True)]
    print(f"{case}: {base_name} best {min(base):.2f} s, {new_name} best {min(new):.2f} s ({what})")
    print(
        f"  ratio {new_name} / {base_name}: best-of {min(new) / min(base):.3f}, paired median "
        f"{statistics.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f})   [target <= {target}]"
    )


def bench_train_mode(repeats: int) -> None:
    from transformers import Trainer, TrainingArguments

    from hf_carto.record.callback import RecordingConfig
    from hf_carto.record.recording_trainer import RecordingTrainer

    dataset, model = tiny_setup(1024, 64, 4096)
    plain_data = dataset.remove_columns("sample_id")

    def args(out):
        return TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=16,
            num_train_epochs=1,
            report_to="none",
            save_strategy="no",
            logging_strategy="no",
            use_cpu=True,
            disable_tqdm=True,
            seed=0,
        )

    def make_plain(out):
        return Trainer(model=model(), args=args(out), train_dataset=plain_data, data_collator=collate)

    def make_recording(out):
        recording = RecordingConfig(mode="train", progress=False)
        return RecordingTrainer(
            model=model(), args=args(out), train_dataset=dataset, data_collator=collate, recording=recording
        )

    times = {"plain": [], "recording": []}
    with tempfile.TemporaryDirectory() as tmp:
        make_plain(f"{tmp}/warm").train()
        for r in range(repeats):
            for name, make in (("plain", make_plain), ("recording", make_recording)):
                trainer = make(f"{tmp}/{name}{r}")  # construction is not timed, only train()
                start = time.perf_counter()
                trainer.train()
                times[name].append(time.perf_counter() - start)
    what = f"one epoch of {len(dataset)} x 64 tokens"
    report("train mode", "plain Trainer", "recording Trainer", times["plain"], times["recording"], 1.03, what)


def bench_eval_mode(repeats: int) -> None:
    from torch.utils.data import DataLoader

    from hf_carto.record.recorder import LossRecorder

    dataset, model_fn = tiny_setup(1024, 64, 4096)
    model = model_fn().eval()
    loader = DataLoader(dataset, batch_size=32, collate_fn=collate)
    batches = list(loader)  # same tensors for both sides: no collation in the timing

    @torch.no_grad()
    def bare():
        for batch in batches:
            model(input_ids=batch["input_ids"], labels=batch["labels"])

    times = {"bare": [], "snapshot": []}
    with tempfile.TemporaryDirectory() as tmp:
        recorder = LossRecorder(tmp, "eval", num_samples=len(dataset), progress=False)
        recorder.start()
        bare()
        for r in range(repeats):
            start = time.perf_counter()
            bare()
            times["bare"].append(time.perf_counter() - start)
            start = time.perf_counter()
            recorder.eval_snapshot(model, batches, snapshot=r + 1, step=r)
            times["snapshot"].append(time.perf_counter() - start)
    what = f"{len(dataset)} x 64 tokens"
    report("eval mode", "bare no-grad loop", "recorded snapshot", times["bare"], times["snapshot"], 1.10, what)


def _status(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return float("nan")


def bench_merge(num_samples: int, snapshots: int = 8) -> None:
    from hf_carto.record.merge import load_loss_matrix
    from hf_carto.record.store import LossStore, RecordingSettings

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = LossStore(tmp)
        store.create_or_check(RecordingSettings(mode="eval", world_size=2, num_samples=num_samples))
        order = rng.permutation(num_samples)
        padded = np.concatenate([order, order[:7]])  # padding duplicates, as a distributed sampler makes
        for t in range(1, snapshots + 1):
            losses = rng.random(num_samples).astype(np.float32)
            for rank in (0, 1):
                ids = padded[rank::2]
                store.write_shard(
                    t,
                    rank,
                    {
                        "sample_id": ids,
                        "loss": losses[ids],
                        "n_tokens": np.full(ids.size, 64),
                        "step": np.full(ids.size, t),
                    },
                )
            store.mark_complete(t, t, float(t))
        del order, padded, losses
        base = _status("VmRSS:")
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass
        start = time.perf_counter()
        matrix = load_loss_matrix(tmp)
        seconds = time.perf_counter() - start
        peak = _status("VmHWM:") - base
    result_mib = (matrix.losses.nbytes + matrix.n_tokens.nbytes) / 2**20
    print(
        f"merge: {num_samples:,} samples x {snapshots} snapshots from 2 ranks in {seconds:.2f} s; "
        f"peak resident growth {peak:.0f} MiB (the merged losses + token counts are {result_mib:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--merge-samples", type=int, default=1_000_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    bench_merge(args.merge_samples)
    bench_eval_mode(args.repeats)
    bench_train_mode(args.repeats)


if __name__ == "__main__":
    main()
