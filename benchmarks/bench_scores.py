"""Speed and memory of the cartography scores.

    python benchmarks/bench_scores.py [--n 10000000] [--t 8] [--naive-rows 20000] [--dataset-rows 1000000]

Case 1: an N x T float32 loss matrix; difficulty + memorization + quadrants with the vectorised
functions, against a per-example Python loop of the kind dataset-cartography code uses (run on a
slice and scaled to N), in the same process. Peak extra memory is measured with tracemalloc
(numpy reports its buffers there) and given as a multiple of the matrix size.

Case 2: a dataset of `--dataset-rows` rows with T loss columns and a text column, saved to disk
and memory-mapped back; `fit_cartography` + `add_cartography` against the array path on the same
losses already in memory. Peak resident memory growth is read from /proc (Linux).

Machines are noisy: compare the printed ratios, not the seconds, across runs.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from hf_carto import assign_quadrants, difficulty, memorization


def fast_scores(losses: np.ndarray, burn_in: int, eps: float):
    d = difficulty(losses, burn_in)
    m = memorization(losses, eps)
    return d, m, assign_quadrants(d, m).quadrants


def naive_scores(losses: np.ndarray, burn_in: int, eps: float):
    """One example at a time, as in per-example training-dynamics loops."""
    d, m = [], []
    for row in losses:
        d.append(float(np.mean(row[:burn_in])))
        events = 0
        for t in range(len(row) - 1):
            if row[t] < eps and row[t + 1] > eps:
                events += 1
        m.append(events / (len(row) - 1))
    tau_d, tau_m = np.percentile(d, 75, method="inverted_cdf"), np.percentile(m, 75, method="inverted_cdf")
    quadrants = [int(di > tau_d) + 2 * int(mi > tau_m) for di, mi in zip(d, m, strict=True)]
    return np.array(d), np.array(m), np.array(quadrants)


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        gc.collect()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def make_losses(n: int, t: int, seed: int = 0) -> np.ndarray:
    """Losses that fall over snapshots with noise, so that forget events occur."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(4.0, 1.0, size=(n, 1)).astype(np.float32)
    decay = np.linspace(1.0, 0.4, t, dtype=np.float32)[None, :]
    noise = rng.normal(0.0, 0.35, size=(n, t)).astype(np.float32)
    return np.maximum(base * decay + noise, 0.01, dtype=np.float32)


def case_matrix(n: int, t: int, naive_rows: int, repeats: int) -> None:
    losses = make_losses(n, t)
    burn_in, eps = t // 2, float(np.quantile(losses[: min(n, 1_000_000)], 0.1))
    print(f"case 1: {n:,} x {t} float32 matrix ({losses.nbytes / 2**20:.0f} MiB), burn_in={burn_in}, eps={eps:.3f}")

    # Same answers first: the benchmark is meaningless if the two paths disagree.
    head = losses[:naive_rows]
    for a, b in zip(fast_scores(head, burn_in, eps)[:2], naive_scores(head, burn_in, eps)[:2], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)

    fast_s = best_of(lambda: fast_scores(losses, burn_in, eps), repeats)
    naive_slice = best_of(lambda: naive_scores(head, burn_in, eps), 1)
    naive_s = naive_slice * n / len(head)

    gc.collect()
    tracemalloc.start()
    fast_scores(losses, burn_in, eps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    print(f"  vectorised: {fast_s:.2f} s  (best of {repeats})")
    print(f"  naive loop: {naive_s:.1f} s  (measured on {len(head):,} rows, scaled)")
    print(f"  speed-up  : {naive_s / fast_s:.0f}x   [target >= 20x, and vectorised < 2 s]")
    print(f"  peak extra memory: {peak / 2**20:.0f} MiB = {peak / losses.nbytes:.2f}x the matrix   [target <= 2x]")


def _rss_peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _rss_peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def case_dataset(rows: int, t: int, repeats: int) -> None:
    from datasets import Dataset, disable_caching, load_from_disk

    from hf_carto import add_cartography, fit_cartography

    disable_caching()  # otherwise the repeats would reload the first run's map output from cache

    losses = make_losses(rows, t, seed=1)
    columns = {f"carto_loss_{i + 1}": losses[:, i] for i in range(t)}
    columns["sample_id"] = np.arange(rows, dtype=np.int64)
    columns["text"] = np.full(rows, "x" * 200)  # a wide column the scoring must not read
    with tempfile.TemporaryDirectory() as tmp:
        Dataset.from_dict(columns).save_to_disk(f"{tmp}/ds")
        del columns
        ds = load_from_disk(f"{tmp}/ds")  # memory-mapped Arrow
        burn_in, eps = t // 2, float(np.quantile(losses, 0.1))

        def dataset_path():
            fit = fit_cartography(ds, burn_in=burn_in, eps=eps)
            return add_cartography(ds, fit)

        dataset_path()  # warm the page cache
        gc.collect()
        base_rss = _rss_mib()
        _rss_peak_reset()
        ds_s = best_of(dataset_path, repeats)
        peak_growth = _rss_peak_mib() - base_rss
        array_s = best_of(lambda: fast_scores(losses, burn_in, eps), repeats)
    print(f"case 2: {rows:,}-row dataset, {t} loss columns + a 200-character text column, memory-mapped")
    print(f"  fit_cartography + add_cartography: {ds_s:.2f} s  (best of {repeats})")
    print(f"  array path on the same losses in memory: {array_s:.3f} s")
    print(f"  ratio dataset / array: {ds_s / array_s:.1f}x")
    print(
        f"  peak resident growth during the dataset path: {peak_growth:.0f} MiB "
        f"(loss columns alone: {losses.nbytes / 2**20:.0f} MiB; text column: {rows * 200 / 2**20:.0f} MiB)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000_000)
    parser.add_argument("--t", type=int, default=8)
    parser.add_argument("--naive-rows", type=int, default=20_000)
    parser.add_argument("--dataset-rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    case_dataset(args.dataset_rows, args.t, args.repeats)  # first, so its RSS peak is not the matrix's
    case_matrix(args.n, args.t, args.naive_rows, args.repeats)


if __name__ == "__main__":
    main()
