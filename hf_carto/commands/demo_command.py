"""Cartography alone: a tiny GPT-2 on the generated corpus in a plain loop, its data mapped (CPU, ~1
min; the whole experiment is `make demo`).

Cartography alone, on CPU in about a minute, nothing downloaded: generate the corpus (planted
duplicates, canaries and noise, each labelled), train a byte-level BPE tokenizer and a tiny GPT-2 in
a plain PyTorch loop (hf_carto/experiment/loop_demo.py) recording every sample's eval-mode loss,
then score the samples, split them into quadrants and compare the quadrants with what was planted.
Writes OUTPUT_DIR/scored (the scored dataset with its leakage and duplicate columns), data_map.png,
data_map.html, report.json and the recorded losses (OUTPUT_DIR/run), replacing an earlier run once
complete. No arms, no leakage evaluation of arms: that is the experiment, `python
recipes/gpt2_wikitext.py --preset cpu-demo` (`make demo`).
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output-dir", default="outputs/demo", help="folder to write (default outputs/demo)")
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the model's weights and the data order; the corpus is always the same (default 0)",
    )
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default 12)")
    parser.add_argument(
        "--snapshots-per-epoch", type=int, default=None, help="eval-mode loss snapshots per epoch (default 2)"
    )
    parser.add_argument("--eps", default=None, help="forget threshold policy (default quantile:0.05)")


def run(args: argparse.Namespace) -> int:
    from hf_carto.experiment.loop_demo import DemoConfig, run_demo

    config = DemoConfig(output_dir=args.output_dir, seed=args.seed)
    for name in ("epochs", "snapshots_per_epoch", "eps"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    run_demo(config)
    return 0
