"""Evaluates a seeded tiny GPT-2 on seeded probes (canaries, contamination, members, planted
blocks, validation) and writes the report; run it plainly (one process) or with `accelerate launch`
(every process takes a share of each measurement's batches).

    accelerate launch --multi_gpu --num_processes 2 tests/launch/eval_tiny.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(argv: list[str]) -> None:
    from accelerate import PartialState

    from hf_carto.core.batching import map_batches, split_across_processes
    from hf_carto.core.models import tiny_gpt2
    from hf_carto.data.canaries import make_canaries
    from hf_carto.data.generated import CorpusConfig, generate_corpus
    from hf_carto.data.tokenization import train_bpe_tokenizer
    from hf_carto.measure.model_report import evaluate_model

    state = PartialState(cpu=True)
    out = Path(argv[0])
    texts = generate_corpus(
        CorpusConfig(num_documents=90, num_duplicate_groups=0, num_canaries=0, num_noise_documents=0, seed=3)
    )["text"][:]
    canaries = make_canaries(5, repetitions=(1, 2, 4, 8, 16), secret_length=3, seed=2)
    tokenizer = train_bpe_tokenizer(texts + [c.text for c in canaries], vocab_size=300)
    encoded = [tokenizer(t)["input_ids"][:48] for t in texts]
    windows = [e[:16] for e in encoded if len(e) >= 16]
    model = tiny_gpt2(len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2, eos_token_id=0, seed=4)
    with split_across_processes():
        report = evaluate_model(
            model,
            tokenizer,
            canaries=canaries[:3],
            control_canaries=canaries[3:],
            contaminating=windows[:7],
            control=windows[7:12],
            members=encoded[:41],
            non_members=encoded[41:80],
            member_texts=texts[:41],
            non_member_texts=texts[41:80],
            planted_members=windows[12:21],
            planted_non_members=windows[21:30],
            validation=encoded[80:],
            k=8,
            batch_size=4,
            num_resamples=30,
            output_dir=out,
        )
        owners = map_batches(5, lambda index: state.process_index)  # which process computed each item
    (out / f"returned.rank{state.process_index}.json").write_text(json.dumps(report, sort_keys=True))
    (out / f"owners.rank{state.process_index}.json").write_text(json.dumps(owners))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
