"""Merge recorded loss shards into carto_loss_{t} columns.

Merge RUN_DIR/carto/losses/snapshot=T/rank=R.parquet into one column per snapshot. With --dataset,
the columns are added to that dataset (aligned by sample_id) and saved to --out (default
RUN_DIR/carto/dataset); without it, a parquet file of sample_id + carto_loss_{t} is written (default
RUN_DIR/carto/losses.parquet). Either output feeds `hf-carto score`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hf_carto.commands.dataset_inputs import load_rows, refuse_existing

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="the training output_dir that holds carto/")
    parser.add_argument("--dataset", default=None, help="training dataset with its sample_id column")
    parser.add_argument("--out", default=None, help="where to write the merged result")
    parser.add_argument("--allow-nonfinite", action="store_true", help="merge NaN/inf losses instead of failing")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock, remove_stale_staging_of
    from hf_carto.record.merge import add_loss_columns, load_loss_matrix, write_wide_parquet

    run_dir = Path(args.run_dir)
    if not (run_dir / "carto" / "manifest.json").exists():
        raise FileNotFoundError(f"{run_dir / 'carto' / 'manifest.json'}: no recording in {run_dir}")
    if args.dataset is None:
        out = Path(args.out) if args.out else run_dir / "carto" / "losses.parquet"
        with output_lock(out, "hf-carto merge"):
            remove_stale_staging_of(out)
            refuse_existing(out, args.overwrite)
            matrix = load_loss_matrix(run_dir, allow_nonfinite=args.allow_nonfinite, progress=True)
            write_wide_parquet(matrix, out)
        n, t = matrix.losses.shape
    else:
        from hf_carto.score.scored_io import save_scored

        out = Path(args.out) if args.out else run_dir / "carto" / "dataset"
        with output_lock(out, "hf-carto merge"):
            remove_stale_staging_of(out)
            refuse_existing(out, args.overwrite)
            merged = add_loss_columns(load_rows(args.dataset), run_dir, allow_nonfinite=args.allow_nonfinite)
            save_scored(merged, out, overwrite=args.overwrite)
        n, t = len(merged), sum(c.startswith("carto_loss_") for c in merged.column_names)
    print(f"merged {t} snapshots of {n} samples into {out}")
    return 0
