"""Writes the leakage columns of seeded token rows under a seeded tiny GPT-2; run it with
`accelerate launch` (every process computes a share) or plainly (one process).

    accelerate launch --multi_gpu --num_processes 2 tests/launch/leak_tiny.py OUT.parquet
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from datasets import Dataset

from hf_carto.core.models import tiny_gpt2
from hf_carto.measure.leakage_columns import add_leakage_columns


def main(argv: list[str]) -> None:
    from accelerate import PartialState

    PartialState(cpu=True)  # under accelerate launch: the process group every process takes part in
    out = argv[0]
    rng = np.random.default_rng(0)
    rows = rng.integers(1, 30, size=(45, 16)).tolist()
    model = tiny_gpt2(30, n_layer=1, n_embd=16, n_head=2, n_positions=32, eos_token_id=0, seed=0)
    model.generation_config.eos_token_id = None
    for i in range(0, 45, 4):  # every fourth row continues as greedy decoding does: extractable
        prefix = torch.tensor([rows[i][:8]])
        generated = model.generate(input_ids=prefix, do_sample=False, max_new_tokens=8, pad_token_id=0)
        rows[i] = generated[0].tolist()
    ds = Dataset.from_dict({"input_ids": rows, "sample_id": np.arange(45) + 100})
    split = "--alone" not in argv  # --alone: each process computes every row by itself
    ds = add_leakage_columns(ds, model, batch_size=4, progress=False, split_across_processes=split)
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    ds.to_parquet(out.replace(".parquet", f".rank{rank}.parquet"))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
