"""Throughput of the per-row leakage columns against a bare greedy `generate` over the same blocks.

    python benchmarks/bench_leakage.py [--blocks 4000] [--block-size 32] [--repeats 3]

The baseline is what k-extractability alone costs when computed the obvious way: one batched
`model.generate(do_sample=False, max_new_tokens=k)` from each block's first k tokens (k = half a
block), batches of the same size. `add_leakage_columns` computes k-extractability *and* the loss and
min-k%++ of every block in one teacher-forced pass. Both run on the same model and blocks, in the
same process, repetitions interleaved; the script prints the median time of each, their ratio and
whether the two give the same extractable rows. Half the blocks continue as the model's own greedy
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
    parser.add_argument("--blocks", type=int, default=4000)
    parser.add_argument("--block-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from hf_carto import add_leakage_columns
    from hf_carto.models import tiny_gpt2

    vocab, k = 4096, args.block_size // 2
    model = tiny_gpt2(vocab, n_positions=args.block_size, n_embd=128, n_layer=2, n_head=4, eos_token_id=0, seed=0)
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

    def columns() -> np.ndarray:
        out = add_leakage_columns(dataset, model, batch_size=args.batch_size, progress=False)
        return np.asarray(out["carto_leak_extractable"])

    times = {"generate": [], "columns": []}
    for _ in range(args.repeats):
        for name, run in (("generate", bare_generate), ("columns", columns)):
            start = time.perf_counter()
            result = run()
            times[name].append(time.perf_counter() - start)
            if name == "generate":
                by_generate = (result == suffixes).all(axis=1)
            else:
                by_columns = result
    g, c = statistics.median(times["generate"]), statistics.median(times["columns"])
    print(
        f"{args.blocks:,} blocks of {args.block_size} tokens (k = {k}), batches of {args.batch_size}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}:"
    )
    print(f"  bare generate (k-extractability only): {g:.2f} s  ({args.blocks / g:,.0f} blocks/s)")
    print(f"  add_leakage_columns (+ loss, min-k%++): {c:.2f} s  ({args.blocks / c:,.0f} blocks/s)")
    print(f"  speed-up: {g / c:.1f}x")
    agree = int((by_generate == by_columns).sum())
    print(
        f"  same extractable rows: {agree} of {args.blocks} "
        f"({int(by_columns.sum())} extractable by the columns, {int(by_generate.sum())} by generate)"
    )


if __name__ == "__main__":
    main()
