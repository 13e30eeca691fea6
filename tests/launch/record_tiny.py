"""Records per-sample losses of a tiny GPT-2 on random token blocks; run it with `accelerate launch`.

    accelerate launch --cpu --num_processes 2 tests/launch/record_tiny.py OUT --mode eval --loop trainer

`--loop trainer` uses RecordingTrainer; `--loop callback` the stock ``transformers.Trainer`` with
CartographyCallback and its compute_loss_func; `--loop accelerate` a hand-written accelerate loop
with LossRecorder. The data and the initial weights depend only on --seed, never on the world size.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from datasets import Dataset


def make_dataset(num_samples: int, block_size: int, vocab_size: int, seed: int) -> Dataset:
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab_size, size=(num_samples, block_size)).tolist()
    return Dataset.from_dict(
        {"input_ids": ids, "labels": ids, "sample_id": np.arange(num_samples, dtype=np.int64) + 100}
    )


def make_model(vocab_size: int, block_size: int, seed: int):
    from hf_carto.core.models import tiny_gpt2

    return tiny_gpt2(
        vocab_size,
        n_positions=block_size,
        n_embd=16,
        n_layer=2,
        n_head=2,
        eos_token_id=0,
        seed=seed,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )


def collate(rows):
    return {k: torch.tensor([r[k] for r in rows]) for k in rows[0]}


def add_interventions(dataset: Dataset, seed: int) -> Dataset:
    """Seeded loss weights (some 0, some 0.5), sampling weights and removals for CartoTrainer runs."""
    rng = np.random.default_rng(seed + 1)
    n = len(dataset)
    dataset = dataset.add_column("carto_loss_weight", rng.choice([0.0, 0.5, 1.0], size=n).astype(np.float32))
    dataset = dataset.add_column("carto_sampling_weight", rng.choice([1.0, 3.0], size=n).astype(np.float32))
    return dataset.add_column("carto_keep", rng.random(n) > 0.1)


def run_trainer(args, dataset, model) -> None:
    from transformers import Trainer, TrainingArguments

    from hf_carto.curation.weighted_trainer import CartoTrainer
    from hf_carto.record.callback import CartographyCallback, RecordingConfig
    from hf_carto.record.recording_trainer import RecordingTrainer

    if args.iterable:
        dataset = dataset.to_iterable_dataset(num_shards=1)
    training_args = TrainingArguments(
        output_dir=args.output_dir,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        num_train_epochs=args.epochs,
        max_steps=args.max_steps,
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        report_to="none",
        save_strategy="no",
        logging_strategy="no",
        seed=args.seed,
        use_cpu=True,
        disable_tqdm=True,
        dataloader_drop_last=False,
        ddp_find_unused_parameters=False,
        optim=args.optim,
        remove_unused_columns=args.loop != "callback",  # the stock Trainer would drop sample_id
    )
    recording = RecordingConfig(mode=args.mode, snapshot_every=args.snapshot_every, progress=False)
    if args.curated:
        trainer = CartoTrainer(
            model=model,
            args=training_args,
            train_dataset=add_interventions(dataset, args.seed),
            data_collator=collate,
            recording=recording,
            epoch_samples=args.epoch_samples,
        )
    elif args.loop == "callback":
        callback = CartographyCallback(args.mode, snapshot_every=args.snapshot_every, progress=False)
        trainer = Trainer(
            model=model,
            args=training_args,
            train_dataset=dataset,
            data_collator=collate,
            callbacks=[callback],
            compute_loss_func=callback.compute_loss_func,
        )
    else:
        trainer = RecordingTrainer(
            model=model, args=training_args, train_dataset=dataset, data_collator=collate, recording=recording
        )
    trainer.train()
    trainer.save_model(f"{args.output_dir}/final")


def run_accelerate_loop(args, dataset, model) -> None:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from hf_carto.record.losses import per_sample_loss
    from hf_carto.record.recorder import LossRecorder

    accelerator = Accelerator(cpu=True)
    train_loader = DataLoader(
        dataset,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    snapshot_loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, collate_fn=collate)
    if args.fsdp:
        # torch's FSDP2 on CPU with gloo: every block and the whole model sharded across the
        # processes (accelerate's FSDP plugin needs GPUs, so the model is sharded here directly and
        # only the optimizer and loaders go through prepare).
        from torch.distributed.fsdp import fully_shard

        for block in model.transformer.h:
            fully_shard(block)
        fully_shard(model)
        local = sum(p.to_local().numel() for p in model.parameters())
        whole = sum(p.numel() for p in model.parameters())
        assert local < whole, "the parameters are not sharded"  # each process holds about 1/N of them
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        optimizer, train_loader, snapshot_loader = accelerator.prepare(optimizer, train_loader, snapshot_loader)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=args.lr)
        model, optimizer, train_loader, snapshot_loader = accelerator.prepare(
            model, optimizer, train_loader, snapshot_loader
        )
    recorder = LossRecorder(
        args.output_dir, mode=args.mode, num_samples=len(dataset), accelerator=accelerator, progress=False
    )
    recorder.start()
    step = 0
    for epoch in range(int(args.epochs)):
        for batch in train_loader:
            ids = batch.pop("sample_id")
            logits = model(input_ids=batch["input_ids"]).logits
            losses, counts = per_sample_loss(logits, batch["labels"], return_counts=True)
            if recorder.mode == "train":
                recorder.record(ids, losses, counts, step)
            loss = (losses * counts).sum() / counts.sum()
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            step += 1
        if recorder.mode == "train":
            recorder.end_snapshot(epoch + 1, step, epoch + 1)
        else:
            recorder.eval_snapshot(
                accelerator.unwrap_model(model),
                snapshot_loader,
                snapshot=epoch + 1,
                step=step,
                epoch=epoch + 1,
            )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--mode", default="eval")
    parser.add_argument("--loop", choices=["trainer", "callback", "accelerate"], default="trainer")
    parser.add_argument("--num-samples", type=int, default=37)
    parser.add_argument("--block-size", type=int, default=12)
    parser.add_argument("--vocab-size", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-steps", type=int, default=-1)
    parser.add_argument("--lr", type=float, default=0.0)
    parser.add_argument("--snapshot-every", type=int, default=None)
    parser.add_argument("--iterable", action="store_true")
    parser.add_argument("--fsdp", action="store_true", help="accelerate loop: the model sharded by torch FSDP2")
    parser.add_argument("--curated", action="store_true", help="CartoTrainer with seeded intervention columns")
    parser.add_argument("--epoch-samples", type=int, default=None)
    parser.add_argument("--optim", default="adamw_torch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    dataset = make_dataset(args.num_samples, args.block_size, args.vocab_size, args.seed)
    model = make_model(args.vocab_size, args.block_size, args.seed)
    (run_accelerate_loop if args.loop == "accelerate" else run_trainer)(args, dataset, model)
    # Leaving the process group to interpreter shutdown can abort gloo's worker threads.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
