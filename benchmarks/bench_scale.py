"""Cost at scale: merging recorded shards into loss columns, against its result's size.

    python benchmarks/bench_scale.py [--samples 10000000] [--snapshots 8] [--ranks 2] [--tmp DIR]

Writes a recording of ``--samples`` x ``--snapshots`` losses from ``--ranks`` ranks (real shards,
with checksums, as the recorder writes them: each rank's ids in a shuffled order, padding copies
included) and a ``save_to_disk`` dataset holding only ``sample_id``, then merges them with
``add_loss_columns`` in a fresh process. Prints the merge's wall time, its time against one plain
read of every shard (``pyarrow.parquet.read_table``, the floor of any merge), and its peak resident
memory above the process's state before the merge, against the size of the result
(``N x T x 4`` bytes; target <= 2x). The columns land in a memory-mapped Arrow file, so the result
itself is not resident.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

MERGE = r"""
import json, resource, sys, time
from datasets import load_from_disk
from hf_carto.merge import add_loss_columns

run, data = sys.argv[1], sys.argv[2]
dataset = load_from_disk(data)
# The resident size now (not the peak so far, which imports may have set): a peak left by an
# import would then count against the merge, never hide part of it.
status = open("/proc/self/status").read()
before = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))
start = time.perf_counter()
merged = add_loss_columns(dataset, run, progress=False)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
assert merged.num_rows == dataset.num_rows
print(json.dumps({"seconds": seconds, "before_kib": before, "peak_kib": peak}))
"""

READ = r"""
import json, sys, time
from pathlib import Path
import pyarrow.parquet as pq

start = time.perf_counter()
rows = sum(pq.read_table(p).num_rows for p in sorted(Path(sys.argv[1]).rglob("rank=*.parquet")))
print(json.dumps({"seconds": time.perf_counter() - start, "rows": rows}))
"""


def write_recording(run: Path, n: int, snapshots: int, ranks: int, seed: int = 0) -> None:
    from hf_carto.recording import LossStore, RecordingSettings

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
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=10_000_000)
    parser.add_argument("--snapshots", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--tmp", default=None, help="where the recording and the dataset are written")
    args = parser.parse_args()

    from datasets import Dataset

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        run, data = Path(tmp) / "run", Path(tmp) / "data"
        start = time.perf_counter()
        write_recording(run, args.samples, args.snapshots, args.ranks)
        Dataset.from_dict({"sample_id": np.arange(args.samples, dtype=np.int64)}).save_to_disk(str(data))
        print(f"wrote the recording in {time.perf_counter() - start:.1f} s")
        read = run_json(READ, str(run))
        merged = run_json(MERGE, str(run), str(data))
    result_mib = args.samples * args.snapshots * 4 / 2**20
    extra_mib = (merged["peak_kib"] - merged["before_kib"]) / 1024
    print(
        f"merge of {args.samples:,} samples x {args.snapshots} snapshots from {args.ranks} ranks "
        f"({read['rows']:,} records): {merged['seconds']:.1f} s, {merged['seconds'] / read['seconds']:.1f}x one "
        f"plain read of the shards ({read['seconds']:.1f} s)"
    )
    print(
        f"  peak resident memory above the state before the merge: {extra_mib:,.0f} MiB = "
        f"{extra_mib / result_mib:.2f}x the {result_mib:,.0f} MiB result   [target <= 2x]"
    )


if __name__ == "__main__":
    main()
