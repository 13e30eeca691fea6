"""Reading the datasets the commands are given: each command names the file it read in the errors
of the work done on it, and refuses a dataset with no rows before any work."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["load_rows", "naming_the_file", "options", "refuse_existing"]


@contextlib.contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Name ``path`` in the ValueErrors of the work done on the dataset read from it.

    The library names columns, rows and sample_ids but does not know which file the dataset came
    from; the command line does.
    """
    try:
        yield
    except ValueError as err:
        if str(path) in str(err):
            raise
        raise ValueError(f"{path}: {err}") from None


def load_rows(path: str | Path) -> Any:
    """The dataset at ``path`` (see :func:`hf_carto.score.scored_io.load_table`), refused when it has no rows."""
    from hf_carto.score.scored_io import load_table

    dataset = load_table(path)
    if len(dataset) == 0:
        raise ValueError(f"{path}: the dataset is empty (0 rows, columns {dataset.column_names})")
    return dataset


def refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Refuse an output that exists unless ``--overwrite`` was given: checked before any work, so
    that a long run cannot end in this refusal."""
    if not overwrite and Path(path).exists():
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")


def options(args: Any, *names: str) -> dict[str, Any]:
    """The parsed options ``names`` of ``args`` as keyword arguments of the library call they configure."""
    return {name: getattr(args, name) for name in names}
