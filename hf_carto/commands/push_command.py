"""Publish a scored dataset to the Hub (exported locally first, then uploaded).

DATASET_DIR is a folder written by `hf-carto score` (exported to --export-dir first) or an export
folder (README.md + data/). Canary rows and secrets are withheld. The token comes from HF_TOKEN or
the cached login and is never printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset_dir", help="a folder written by `hf-carto score`, or an export folder")
    parser.add_argument("repo_id", help="namespace/name")
    visibility = parser.add_mutually_exclusive_group()
    visibility.add_argument(
        "--private",
        dest="private",
        action="store_true",
        default=True,
        help="create the repository as private (default)",
    )
    visibility.add_argument("--public", dest="private", action="store_false", help="create the repository as public")
    parser.add_argument("--revision", default=None, help="branch to commit to")
    parser.add_argument("--message", default="Upload curated dataset (hf_carto)", help="commit message")
    parser.add_argument("--export-dir", default=None, help="where the Hub layout is written (default DATASET_DIR.hub)")
    parser.add_argument("--license", default=None, help="license for the card, e.g. cc-by-sa-3.0")
    parser.add_argument(
        "--allow-private",
        action="store_true",
        help="push a folder holding a PRIVATE.md, a canary registry or columns marking canary rows (refused "
        "otherwise)",
    )


def run(args: argparse.Namespace) -> int:
    from hf_carto.core.locking import output_lock
    from hf_carto.publish.push import check_push_source, check_repo_id

    check_repo_id(args.repo_id)  # before any export work
    source = Path(args.dataset_dir)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such folder")
    check_push_source(source)  # a run folder: its private files and what to push instead, before any lock
    exported = (source / "README.md").exists() and (source / "data").is_dir()
    folder = (
        source if exported else Path(args.export_dir) if args.export_dir else source.with_name(source.name + ".hub")
    )
    if not exported:
        from hf_carto.publish.export import check_export_folder

        check_export_folder(folder, [source])  # before anything is written, the lock file included
    # From the export to the end of the upload: another push would replace the folder being read.
    with output_lock(Path(os.path.abspath(folder)), "hf-carto push"):
        return _push(args, source, folder, exported)


def _push(args: argparse.Namespace, source: Path, folder: Path, exported: bool) -> int:
    from hf_carto.publish.export import check_export_folder, export_hub_layout
    from hf_carto.publish.push import push_curated_dataset

    if not exported:
        from hf_carto.score.scored_io import load_scored

        check_export_folder(folder, [source])  # again under the lock: another push may have written it
        dataset, fit = load_scored(source)
        export_hub_layout(
            dataset, folder, repo_id=args.repo_id, fit=fit, license=args.license, overwrite=True, data_map=True
        )
        print(f"exported the Hub layout to {folder}")
    try:
        result = push_curated_dataset(
            folder,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.message,
            allow_private=args.allow_private,
        )
    except Exception as err:  # network and server errors: the export stays for a retry
        if isinstance(err, (ValueError, FileNotFoundError)):
            raise
        print(
            f"hf-carto push: error: the push to {args.repo_id} failed ({type(err).__name__}: {err}); "
            f"the export in {folder} is intact, run the same command again to retry",
            file=sys.stderr,
        )
        return 1
    print(f"pushed {folder} to {result.url}\ncommit {result.commit}")
    return 0
