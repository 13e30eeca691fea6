"""Throughput of the per-row leakage columns against a bare greedy `generate` over the same blocks.

    python benchmarks/bench_leakage.py [--blocks 2000] [--block-size 32] [--repeats 3]
        [--n-layer 2] [--n-embd 128] [--vocab 4096]

Two baselines, on the same model and blocks, batches of the same size:

- bare `generate`: what k-extractability alone costs computed the obvious way, one batched
  `model.generate(do_sample=False, max_new_tokens=k)` from each block's first k tokens (k = half
  a block);
- `generate` + a scoring pass: the obvious way to get all three columns (k-extractability, then
  one forward pass for the loss and min-k%++).

`add_leakage_columns` computes all three from one teacher-forced pass. Repetitions are interleaved
in one process; the script prints the median time of each, the ratios, and whether the columns and
`generate` find the same extractable rows. Half the blocks continue as the model's own greedy
decoding, so that both outcomes occur.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from datasets import Dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=2000)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=4096)
    args = parser.parse_args()

    from hf_carto import add_leakage_columns
    from hf_carto.core.models import tiny_gpt2

    vocab, k = args.vocab, args.block_size // 2
    model = tiny_gpt2(
        vocab, n_positions=args.block_size, n_embd=args.n_embd, n_layer=args.n_layer, n_head=4, eos_token_id=0, seed=0
    )
    model.eval().generation_config.eos_token_id = None  # decode exactly k tokens, as the columns test
    rng = np.random.default_rng(0)
    prefixes = torch.tensor(rng.integers(1, vocab, size=(args.blocks, k)))

    def bare_generate() -> np.ndarray:
        out = []
        with torch.no_grad():
            for start in range(0, args.blocks, args.batch_size):
                ids = prefixes[start : start + args.batch_size]
                out.append(
                    model.generate(
                        input_ids=ids,
                        attention_mask=torch.ones_like(ids),
                        do_sample=False,
                        max_new_tokens=k,
                        pad_token_id=0,
                    )[:, k:]
                )
        return torch.cat(out).numpy()

    greedy = bare_generate()
    suffixes = greedy.copy()
    changed = rng.random(args.blocks) < 0.5  # half the blocks: one token of the greedy continuation changed
    suffixes[changed, -1] = suffixes[changed, -1] % (vocab - 1) + 1
    blocks = np.concatenate([prefixes.numpy(), suffixes], axis=1)
    dataset = Dataset.from_dict({"input_ids": blocks.tolist(), "sample_id": np.arange(args.blocks)})

    def generate_and_score() -> np.ndarray:
        from hf_carto.core.batching import right_pad
        from hf_carto.measure.membership import lowest_fraction_mean, statistics_from_logits

        extractable = (bare_generate() == suffixes).all(axis=1)
        with torch.no_grad():
            for start in range(0, args.blocks, args.batch_size):
                batch = right_pad(blocks[start : start + args.batch_size].tolist(), 0)
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
                stats = statistics_from_logits(logits, batch["input_ids"], batch["attention_mask"])
                z = (stats["logp"] - stats["mu"]) / stats["sigma"]
                lowest_fraction_mean(z, stats["mask"], 0.2)
        return extractable

    def columns() -> np.ndarray:
        out = add_leakage_columns(dataset, model, batch_size=args.batch_size, progress=False)
        return np.asarray(out["carto_leak_extractable"])

    runs = {"generate": bare_generate, "generate + score": generate_and_score, "columns": columns}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - start)
            if name == "generate + score":
                by_generate = result
            elif name == "columns":
                by_columns = result
    g, gs, c = (statistics.median(times[name]) for name in runs)
    print(
        f"{args.blocks:,} blocks of {args.block_size} tokens (k = {k}), GPT-2 of {args.n_layer} layers x "
        f"{args.n_embd}, vocabulary {vocab:,}, batches of {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}:"
    )
    print(f"  bare generate (k-extractability only): {g:.2f} s  ({args.blocks / g:,.0f} blocks/s)")
    print(f"  generate + a scoring pass (all three): {gs:.2f} s  ({args.blocks / gs:,.0f} blocks/s)")
    print(f"  add_leakage_columns (all three):       {c:.2f} s  ({args.blocks / c:,.0f} blocks/s)")
    print(f"  columns / bare generate: {c / g:.2f}x the time; columns / (generate + score): {c / gs:.2f}x")
    agree = int((by_generate == by_columns).sum())
    print(
        f"  same extractable rows: {agree} of {args.blocks} "
        f"({int(by_columns.sum())} extractable by the columns, {int(by_generate.sum())} by generate)"
    )


if __name__ == "__main__":
    main()
