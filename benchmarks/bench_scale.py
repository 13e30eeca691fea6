"""Cost at scale: the data stage, merging recorded shards, and scoring, against their floors.

    python benchmarks/bench_scale.py [--parts data merge fit] [--tmp DIR]
        [--data-tokens 120000000] [--samples 10000000] [--snapshots 8] [--ranks 2] [--fit-rows 100000000]

Every measured step runs in a fresh child process; a thread samples its memory every 20 ms.
Memory is reported two ways: the peak of anonymous resident memory (``RssAnon``: what the
process itself holds) and the peak resident set (``ru_maxrss``, which also counts the pages of
memory-mapped Arrow files the kernel has read in and can drop at will).

- **data**: builds a corpus of about ``--data-tokens`` GPT-2 tokens by repeating
  ``../shared/data/wikitext-2-raw/wiki.train.raw``, and of half that, and runs the recipe's data
  stage (``prepare_data``: GPT-2 tokenizer, 1024-token blocks, 32 canaries, contamination) on
  each; the baseline is a bare ``datasets.map`` tokenization of the same text in its own process
  (targets: peak memory <= 2 GB and flat when the corpus doubles; time <= 1.3x the bare map).
- **merge**: writes a recording of ``--samples`` x ``--snapshots`` losses from ``--ranks`` ranks
  (real shards with checksums, as the recorder writes them: each rank's ids shuffled, padding
  copies included) and merges it with ``add_loss_columns``, against one plain read of every shard
  (``pyarrow.parquet.read_table``) and the size of the result (target <= 2x ``N x T x 4`` bytes).
- **fit**: writes ``--fit-rows`` x ``--snapshots`` float32 losses to an Arrow file and runs
  ``fit_cartography`` + ``add_cartography`` on it memory-mapped, against one read of the loss
  columns (targets: <= 3x the read; <= 1 GB extra memory); it also times writing the three score
  columns alone, the floor of what ``add_cartography`` writes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Prepended to every child: a thread that samples the process's memory every 20 ms.
PRELUDE = r"""
import json, resource, sys, threading, time

def _status():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status").read().splitlines() if ":" in line)
    return int(fields["RssAnon"].split()[0]), int(fields["VmRSS"].split()[0])

class Memory:
    def __init__(self):
        self.before_anon, self.before_rss = _status()
        self.peak_anon = self.before_anon
        self.stop = False
        threading.Thread(target=self._watch, daemon=True).start()
    def _watch(self):
        while not self.stop:
            self.peak_anon = max(self.peak_anon, _status()[0])
            time.sleep(0.02)
    def report(self, **extra):
        self.stop = True
        self.peak_anon = max(self.peak_anon, _status()[0])
        print(json.dumps({"before_anon_kib": self.before_anon, "peak_anon_kib": self.peak_anon,
                          "before_rss_kib": self.before_rss,
                          "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, **extra}))
"""

MERGE = (
    PRELUDE
    + r"""
from datasets import load_from_disk
from hf_carto.record.merge import add_loss_columns

run, data = sys.argv[1], sys.argv[2]
dataset = load_from_disk(data)
memory = Memory()
start = time.perf_counter()
merged = add_loss_columns(dataset, run, progress=False)
seconds = time.perf_counter() - start
assert merged.num_rows == dataset.num_rows
memory.report(seconds=seconds)
"""
)

READ_SHARDS = r"""
import json, sys, time
from pathlib import Path
import pyarrow.parquet as pq

start = time.perf_counter()
rows = sum(pq.read_table(p).num_rows for p in sorted(Path(sys.argv[1]).rglob("rank=*.parquet")))
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
"""

ARROW_TEXT = r"""
import json, sys, time
from datasets import load_dataset
start = time.perf_counter()
ds = load_dataset("text", data_files={"train": sys.argv[1]}, split="train")
print(json.dumps({"seconds": time.perf_counter() - start, "rows": len(ds)}))
"""

BARE_MAP = (
    PRELUDE
    + r"""
from datasets import load_dataset
from transformers import AutoTokenizer

corpus, tokenizer_dir, cache = sys.argv[1:4]
tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
ds = load_dataset("text", data_files={"train": corpus}, split="train")
memory = Memory()
start = time.perf_counter()
tokens = ds.map(
    lambda batch: tokenizer(batch["text"]), batched=True, remove_columns=["text"],
    cache_file_name=cache, load_from_cache_file=False,
)
memory.report(seconds=time.perf_counter() - start, rows=len(tokens))
"""
)

DATA_STAGE = (
    PRELUDE
    + r"""
from pathlib import Path
from hf_carto.experiment import parse_arguments
from hf_carto.experiment.stage_data import prepare_data

corpus, valid, tokenizer_dir, out = sys.argv[1:5]
argv = [
    "--output_dir", out, "--dataset_name", "none", "--train_file", corpus, "--validation_file", valid,
    "--tokenizer_name", tokenizer_dir, "--train_tokenizer_vocab_size", "0", "--block_size", "1024",
    "--num_canaries", "32", "--canary_repetitions", "1", "2", "4", "8", "16", "--num_contaminating", "32",
    "--contamination_k", "32", "--num_membership_samples", "100",
]
model_args, data_args, _, _ = parse_arguments(argv)
memory = Memory()
start = time.perf_counter()
data = prepare_data(model_args, data_args, Path(out), True)
memory.report(seconds=time.perf_counter() - start, blocks=len(data.blocks))
"""
)

READ_LOSSES = (
    PRELUDE
    + r"""
import numpy as np
from datasets import Dataset
ds = Dataset.from_file(sys.argv[1])
columns = [c for c in ds.column_names if c.startswith("carto_loss_")]
memory = Memory()
start = time.perf_counter()
total = 0.0
for batch in ds.data.select(columns).to_batches(max_chunksize=1 << 16):
    total += sum(float(np.asarray(column).sum()) for column in batch.columns)
memory.report(seconds=time.perf_counter() - start, checksum=total)
"""
)

# The least add_cartography must do beyond reading: write its three columns (float64 d and m, int64
# quadrant) for every row, here from one ready batch written over and over.
WRITE_SCORES = (
    PRELUDE
    + r"""
import numpy as np, pyarrow as pa
rows, path = int(sys.argv[1]), sys.argv[2]
batch_rows = 65_536
rng = np.random.default_rng(0)
batch = pa.RecordBatch.from_arrays(
    [pa.array(rng.random(batch_rows)), pa.array(rng.random(batch_rows)), pa.array(rng.integers(0, 4, batch_rows))],
    names=["carto_difficulty", "carto_memorization", "carto_quadrant"],
)
memory = Memory()
start = time.perf_counter()
with pa.ipc.new_stream(path, batch.schema) as writer:
    for done in range(0, rows, batch_rows):
        writer.write_batch(batch.slice(0, min(batch_rows, rows - done)))
memory.report(seconds=time.perf_counter() - start)
"""
)

FIT = (
    PRELUDE
    + r"""
from datasets import Dataset
from hf_carto import add_cartography, fit_cartography
ds = Dataset.from_file(sys.argv[1])
eps = sys.argv[2]
memory = Memory()
start = time.perf_counter()
fit = fit_cartography(ds, burn_in=2, eps=eps)
fitted = time.perf_counter() - start
scored = add_cartography(ds, fit)
memory.report(seconds=time.perf_counter() - start, fit_seconds=fitted, rows=len(scored), tau_d=fit.tau_d)
"""
)


def write_recording(run: Path, n: int, snapshots: int, ranks: int, seed: int = 0) -> None:
    from hf_carto.record.store import LossStore, RecordingSettings

    store = LossStore(run)
    store.create_or_check(RecordingSettings(mode="eval", world_size=ranks, num_samples=n))
    rng = np.random.default_rng(seed)
    padded = -n % ranks
    for t in range(1, snapshots + 1):
        order = rng.permutation(n)
        order = np.concatenate([order, order[:padded]])  # the sampler's padding copies
        losses = rng.random(n, dtype=np.float32) * 6
        for rank in range(ranks):
            ids = order[rank::ranks].astype(np.int64)
            store.write_shard(
                t,
                rank,
                {
                    "sample_id": ids,
                    "loss": losses[ids],
                    "n_tokens": np.full(ids.size, 32, dtype=np.int32),
                    "step": np.full(ids.size, t, dtype=np.int64),
                },
            )
        store.mark_complete(t, step=t, epoch=float(t))


def run_json(code: str, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"a measured step failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def mib(kib: int) -> float:
    return kib / 1024


def memory_line(result: dict) -> str:
    anon = mib(result["peak_anon_kib"] - result["before_anon_kib"])
    return (
        f"peak anonymous memory {mib(result['peak_anon_kib']):,.0f} MiB ({anon:+,.0f} MiB during the step), "
        f"peak resident set {mib(result['peak_rss_kib']):,.0f} MiB"
    )


def write_corpus(path: Path, source: Path, copies: int) -> None:
    text = source.read_bytes()
    with open(path, "wb") as handle:
        for _ in range(copies):
            handle.write(text)


def part_data(tmp: Path, target_tokens: int) -> None:
    # the one data setting the tests read too (tests/shared_data.py)
    shared = Path(os.environ.get("HF_CARTO_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    source, valid, tokenizer = (
        shared / "wikitext-2-raw" / "wiki.train.raw",
        shared / "wikitext-2-raw" / "wiki.valid.raw",
        shared / "gpt2-tokenizer",
    )
    # WikiText-2's training file is 2.42M GPT-2 tokens with one end-of-text per non-blank line.
    per_copy = 2_415_000
    for copies in (max(1, round(target_tokens / per_copy / 2)), max(1, round(target_tokens / per_copy))):
        corpus = tmp / f"corpus-{copies}.raw"
        write_corpus(corpus, source, copies)
        arrow = run_json(ARROW_TEXT, str(corpus))
        bare = run_json(BARE_MAP, str(corpus), str(tokenizer), str(tmp / f"bare-{copies}.arrow"))
        stage = run_json(DATA_STAGE, str(corpus), str(valid), str(tokenizer), str(tmp / f"stage-{copies}"))
        (tmp / f"bare-{copies}.arrow").unlink()
        tokens = stage["blocks"] * 1024
        print(
            f"data stage, {copies} copies of wiki.train.raw ({corpus.stat().st_size / 2**20:,.0f} MiB of text, "
            f"{tokens / 1e6:,.1f}M tokens in {stage['blocks']:,} blocks of 1024):"
        )
        print(f"  text file to Arrow (load_dataset, once, before both): {arrow['seconds']:.1f} s")
        print(f"  bare datasets.map tokenization: {bare['seconds']:.1f} s; {memory_line(bare)}")
        print(
            f"  prepare_data: {stage['seconds']:.1f} s = {stage['seconds'] / bare['seconds']:.2f}x the bare map "
            f"[target <= 1.3x]; {memory_line(stage)} [target <= 2 GB, flat when the corpus doubles]"
        )
        corpus.unlink()


def part_merge(tmp: Path, samples: int, snapshots: int, ranks: int) -> None:
    from datasets import Dataset

    run, data = tmp / "run", tmp / "data"
    start = time.perf_counter()
    write_recording(run, samples, snapshots, ranks)
    Dataset.from_dict({"sample_id": np.arange(samples, dtype=np.int64)}).save_to_disk(str(data))
    print(f"wrote the recording in {time.perf_counter() - start:.1f} s")
    read = run_json(READ_SHARDS, str(run))
    merged = run_json(MERGE, str(run), str(data))
    result_mib = samples * snapshots * 4 / 2**20
    extra_mib = mib(merged["peak_rss_kib"] - merged["before_rss_kib"])
    print(
        f"merge of {samples:,} samples x {snapshots} snapshots from {ranks} ranks "
        f"({read['rows']:,} records): {merged['seconds']:.1f} s, {merged['seconds'] / read['seconds']:.1f}x one "
        f"plain read of the shards ({read['seconds']:.1f} s)"
    )
    print(
        f"  peak resident memory above the state before the merge: {extra_mib:,.0f} MiB = "
        f"{extra_mib / result_mib:.2f}x the {result_mib:,.0f} MiB result   [target <= 2x]; {memory_line(merged)}"
    )


def write_losses(path: Path, rows: int, snapshots: int, chunk: int = 1 << 20) -> None:
    """Losses that drift down with noise: forget events occur, and d takes ~rows distinct values."""
    import pyarrow as pa

    rng = np.random.default_rng(0)
    names = [f"carto_loss_{t}" for t in range(1, snapshots + 1)] + ["sample_id"]
    schema = pa.schema([(n, pa.float32()) for n in names[:-1]] + [("sample_id", pa.int64())])
    with pa.ipc.new_stream(str(path), schema) as writer:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            base = rng.gamma(4.0, 1.0, size=n).astype(np.float32)
            arrays = [
                pa.array(base * (1 - 0.08 * t) + rng.normal(0, 0.3, size=n).astype(np.float32))
                for t in range(snapshots)
            ]
            arrays = [pa.array(np.abs(a.to_numpy())) for a in arrays]
            arrays.append(pa.array(np.arange(start, start + n, dtype=np.int64)))
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))


def part_fit(tmp: Path, rows: int, snapshots: int) -> None:
    path = tmp / "losses.arrow"
    start = time.perf_counter()
    write_losses(path, rows, snapshots)
    print(
        f"wrote {rows:,} x {snapshots} losses ({path.stat().st_size / 2**30:.1f} GiB) "
        f"in {time.perf_counter() - start:.0f} s"
    )
    run_json(READ_LOSSES, str(path))  # bring the file into the page cache, as for every step after
    read = run_json(READ_LOSSES, str(path))
    written = run_json(WRITE_SCORES, str(rows), str(tmp / "scores.arrow"))
    (tmp / "scores.arrow").unlink()
    print(
        f"floor: writing the three score columns of {rows:,} rows takes {written['seconds']:.2f} s = "
        f"{written['seconds'] / read['seconds']:.1f}x one read of the loss columns ({read['seconds']:.3f} s)"
    )
    for eps in ("2.0", "quantile:0.3"):
        fit = run_json(FIT, str(path), eps)
        extra = mib(fit["peak_anon_kib"] - fit["before_anon_kib"])
        print(
            f"fit_cartography + add_cartography, {rows:,} rows x {snapshots}, eps={eps}: {fit['seconds']:.2f} s "
            f"(fit {fit['fit_seconds']:.2f} s) = {fit['seconds'] / read['seconds']:.1f}x one read of the loss "
            f"columns ({read['seconds']:.3f} s) [target <= 3x]; {extra:+,.0f} MiB anonymous memory [target <= 1 GiB]; "
            f"{memory_line(fit)}"
        )
        for cache in tmp.glob("cache-*.arrow"):
            cache.unlink()
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", default=["data", "merge", "fit"], choices=["data", "merge", "fit"])
    parser.add_argument("--data-tokens", type=int, default=120_000_000)
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--fit-rows", type=int, default=100_000_000)
    parser.add_argument("--tmp", default=None, help="where the corpus, recording and datasets are written")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        os.environ["HF_DATASETS_CACHE"] = str(Path(tmp) / "hf_cache")  # the children's text-to-Arrow cache
        if "data" in args.parts:
            part_data(Path(tmp), args.data_tokens)
        if "merge" in args.parts:
            part_merge(Path(tmp), args.samples, args.snapshots, args.ranks)
        if "fit" in args.parts:
            part_fit(Path(tmp), args.fit_rows, args.snapshots)


if __name__ == "__main__":
    main()
