"""Speed of the evaluation code, against baselines in the same process.

    python benchmarks/bench_eval.py [--samples 10000] [--candidates 100000]

1. Membership signals (all five) for `--samples` sequences of 64 tokens, batched (64 a batch)
   vs one sample at a time (measured on 500 samples and scaled); target >= 10x.
2. Exposure ranking: log-perplexities of `--candidates` digit secrets after a prefix; throughput.
3. Exact-exposure ranking of a 10^4 space (4-digit secrets after a 9-token canary prefix): the
   shared-prefix key/value cache vs whole-sequence scoring, same candidates, repetitions interleaved
   (`--repeats`); median ratio, target >= 5x.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def tiny_model(vocab: int = 4096):
    from hf_carto.core.models import tiny_gpt2

    return tiny_gpt2(vocab, n_positions=64, n_embd=128, n_layer=2, n_head=4, eos_token_id=0, seed=0).eval()


def bench_signals(num_samples: int) -> None:
    from hf_carto.measure.membership import membership_signals

    model, reference = tiny_model(), tiny_model()
    rng = np.random.default_rng(0)
    sequences = rng.integers(1, 4096, size=(num_samples, 64)).tolist()
    start = time.perf_counter()
    batched = membership_signals(model, sequences, reference_model=reference, batch_size=64)
    batched_s = time.perf_counter() - start
    subset = 500
    start = time.perf_counter()
    single = membership_signals(model, sequences[:subset], reference_model=reference, batch_size=1)
    single_s = (time.perf_counter() - start) * num_samples / subset
    for name in batched:
        np.testing.assert_allclose(single[name], batched[name][:subset], rtol=1e-4, atol=1e-5)
    print(
        f"membership signals for {num_samples:,} x 64 tokens: batched {batched_s:.1f} s, one at a time "
        f"{single_s:.1f} s (measured on {subset}, scaled)"
    )
    print(f"  speed-up: {single_s / batched_s:.1f}x   [target >= 10x]")


def bench_exposure(num_candidates: int) -> None:
    from hf_carto.data.tokenization import train_bpe_tokenizer
    from hf_carto.measure.exposure import secret_log_perplexities

    tokenizer = train_bpe_tokenizer([f"the secret code is {i:06d}" for i in range(2000)], vocab_size=600)
    model = tiny_model(len(tokenizer))
    candidates = [f"{i:06d}" for i in range(num_candidates)]
    start = time.perf_counter()
    secret_log_perplexities(model, tokenizer, "the secret code is", candidates, batch_size=1024)
    seconds = time.perf_counter() - start
    print(
        f"exposure ranking: {num_candidates:,} candidates in {seconds:.1f} s "
        f"({num_candidates / seconds:,.0f} candidates/s); 10^6 would take about {1e6 / num_candidates * seconds:.0f} s"
    )


def _timed(score, *args) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    scores = score(*args)
    return time.perf_counter() - start, scores


def bench_cached_exposure(repeats: int) -> None:
    from hf_carto.data.tokenization import train_bpe_tokenizer
    from hf_carto.measure.exposure import cached_secret_log_perplexities, secret_log_perplexities

    texts = [f"the locker combination of employee walnut-{i} is {i * 7919 % 10**4:04d}" for i in range(2000)]
    tokenizer = train_bpe_tokenizer(texts, vocab_size=600)
    model = tiny_model()
    prefix = "the locker combination of employee walnut-17 is"
    candidates = [f"{i:04d}" for i in range(10_000)]
    full_rates, cached_rates, ratios = [], [], []
    for repeat in range(repeats):
        # Alternate which path runs first, so that neither always gets the warmer (or quieter) slot.
        order = ("full", "cached") if repeat % 2 == 0 else ("cached", "full")
        seconds, scores = {}, {}
        for name in order:
            score = secret_log_perplexities if name == "full" else cached_secret_log_perplexities
            seconds[name], scores[name] = _timed(score, model, tokenizer, prefix, candidates)
        np.testing.assert_allclose(scores["cached"], scores["full"], atol=1e-4)
        full_rates.append(len(candidates) / seconds["full"])
        cached_rates.append(len(candidates) / seconds["cached"])
        ratios.append(seconds["full"] / seconds["cached"])
    print(
        f"exact exposure, 10^4 candidates after a {len(tokenizer(prefix)['input_ids'])}-token prefix "
        f"(median of {repeats}): cached prefix {statistics.median(cached_rates):,.0f} candidates/s, "
        f"whole sequences {statistics.median(full_rates):,.0f} candidates/s"
    )
    each = ", ".join(f"{r:.1f}" for r in ratios)
    print(f"  speed-up: {statistics.median(ratios):.1f}x (per repetition: {each})   [target >= 5x]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    bench_cached_exposure(args.repeats)
    bench_exposure(args.candidates)
    bench_signals(args.samples)


if __name__ == "__main__":
    main()
