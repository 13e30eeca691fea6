"""Cost of weighted training, against the plain Trainer in the same process.

    python benchmarks/bench_trainer.py [--repeats 7] [--draw 10000000]

1. `CartoTrainer` with loss weights (a quarter of them 0.5) vs the plain `Trainer`, same model,
   data and seed, one epoch each, interleaved; target ratio <= 1.03. Only `train()` is timed.
2. `WeightedEpochSampler` drawing `--draw` indices for one epoch: seconds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch
from bench_recording import collate, report, tiny_setup


def bench_weighted_step(repeats: int) -> None:
    from transformers import Trainer, TrainingArguments

    from hf_carto.curation.weighted_trainer import CartoTrainer

    dataset, model = tiny_setup(1024, 64, 4096)
    rng = np.random.default_rng(0)
    weights = np.where(rng.random(len(dataset)) < 0.25, 0.5, 1.0).astype(np.float32)
    curated = dataset.add_column("carto_loss_weight", weights)
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

    makers = {
        "plain": lambda out: Trainer(model=model(), args=args(out), train_dataset=plain_data, data_collator=collate),
        "weighted": lambda out: CartoTrainer(
            model=model(), args=args(out), train_dataset=curated, data_collator=collate
        ),
    }
    times = {name: [] for name in makers}
    with tempfile.TemporaryDirectory() as tmp:
        makers["plain"](f"{tmp}/warm").train()
        for r in range(repeats):
            for name, make in makers.items():
                trainer = make(f"{tmp}/{name}{r}")
                start = time.perf_counter()
                trainer.train()
                times[name].append(time.perf_counter() - start)
    report(
        "weighted training",
        "plain Trainer",
        "CartoTrainer",
        times["plain"],
        times["weighted"],
        1.03,
        f"one epoch of {len(dataset)} x 64 tokens",
    )


def bench_sampler(num_samples: int) -> None:
    from hf_carto.curation.weighted_trainer import WeightedEpochSampler

    weights = np.random.default_rng(0).choice([0.0, 0.5, 1.0, 2.0], size=num_samples)
    start = time.perf_counter()
    sampler = WeightedEpochSampler(weights, seed=0)
    built = time.perf_counter() - start
    runs = []
    for epoch in range(3):
        start = time.perf_counter()
        sampler.indices(epoch)
        runs.append(time.perf_counter() - start)
    print(
        f"sampling: {num_samples:,} weights, sampler built in {built:.2f} s, one epoch's draw of {num_samples:,} "
        f"indices in {statistics.median(runs):.2f} s (median of 3)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--draw", type=int, default=10_000_000)
    args = parser.parse_args()
    torch.set_num_threads(2)
    bench_sampler(args.draw)
    bench_weighted_step(args.repeats)


if __name__ == "__main__":
    main()
