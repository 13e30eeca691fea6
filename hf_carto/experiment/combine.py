"""Seeds run as separate invocations, combined into one report.

A seed of a paper-scale preset is a run of its own (``--seeds N --output_dir DIR``), so that each
can be resumed, run on another machine, and its small ``report.json`` committed. :func:`combine`
reads those reports, checks they are seeds of one protocol (the same settings but the seed and the
output folder, the same data, the same inputs by content), and builds the report over seeds with
the same code a multi-seed run uses: the table, paired differences against the controls and the
reading. :func:`collect` writes it all into a results folder: each seed's report (its inputs named
by paths relative to the working folder, so no machine's paths are committed) and the combined
``report.json`` / ``report.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hf_carto.core.atomic import write_json_atomic
from hf_carto.experiment.report_markdown import format_markdown
from hf_carto.experiment.results import build_report, write_frontier_figures
from hf_carto.experiment.run_folder import FINGERPRINT, StageTimer

__all__ = ["collect", "combine", "load_seed_report"]

# Settings that may differ between the seeds of one protocol.
_PER_SEED = {"seeds", "output_dir"}


def load_seed_report(path: str | os.PathLike) -> dict[str, Any]:
    """A run's ``report.json`` (``path`` is the file or its run folder), checked to hold what
    :func:`combine` needs.

    Raises:
        FileNotFoundError: no report at ``path``.
        ValueError: naming the file, when it is not JSON or lacks a key.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "report.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no report.json (has the run finished?)")
    try:
        report = json.loads(path.read_text())
    except ValueError as err:
        raise ValueError(f"{path}: not JSON ({err})") from None
    missing = [k for k in ("settings", "rows", "num_blocks", "data_counts", "cartography") if k not in report]
    if missing:
        raise ValueError(f"{path}: not an experiment report (it lacks {missing})")
    report["_path"] = str(path)
    return report


def _comparable(settings: dict[str, Any]) -> dict[str, Any]:
    """Settings without the per-seed ones; local inputs by content (their fingerprint), not by path."""
    inputs = {k.removesuffix(FINGERPRINT) for k in settings if k.endswith(FINGERPRINT)}
    return {k: v for k, v in settings.items() if k not in _PER_SEED and k not in inputs}


def combine(reports: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One report over the seeds of ``reports`` (each from :func:`load_seed_report`).

    Raises:
        ValueError: on no report, a seed present twice, or reports of different protocols (the
            differing settings and both files are named).
    """

    if not reports:
        raise ValueError("no report to combine")
    first = reports[0]
    reference = _comparable(first["settings"])
    seen: dict[int, str] = {}
    for report in reports:
        settings = _comparable(report["settings"])
        differ = sorted(k for k in set(reference) | set(settings) if reference.get(k) != settings.get(k))
        if differ:
            shown = ", ".join(f"{k}: {reference.get(k)!r} vs {settings.get(k)!r}" for k in differ[:6])
            raise ValueError(
                f"{report['_path']} is not a seed of the same run as {first['_path']}: {len(differ)} settings differ "
                f"({shown})"
            )
        for key in ("num_blocks", "data_counts"):
            if report[key] != first[key]:
                raise ValueError(f"{report['_path']} and {first['_path']} were run on different data ({key} differs)")
        for seed in report["settings"]["seeds"]:
            if seed in seen:
                raise ValueError(f"seed {seed} is in both {seen[seed]} and {report['_path']}")
            seen[seed] = report["_path"]
    rows = [row for report in reports for row in report["rows"]]
    cartography = {k: v for report in reports for k, v in report["cartography"].items()}
    settings = dict(first["settings"], seeds=sorted(seen))
    settings.pop("output_dir", None)
    combined = build_report(rows, settings, first["num_blocks"], first["data_counts"], cartography)
    # Time and memory: each seed's own invocations, summed stage by stage.
    totals: dict[str, float] = {}
    for report in reports:
        for stage, seconds in report.get("stage_seconds_total", {}).items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    combined["stage_seconds_total"] = totals
    combined["stage_table"] = StageTimer.table(totals)
    combined["invocations"] = sum(r.get("invocations", 1) for r in reports)
    combined["peak_rss_mib"] = max(r.get("peak_rss_mib", 0.0) for r in reports)
    combined["seconds_per_seed"] = {
        str(seed): round(sum(r.get("stage_seconds_total", {}).values()), 1)
        for r in reports
        for seed in r["settings"]["seeds"]
    }
    return combined


def _portable(report: dict[str, Any], start: Path) -> dict[str, Any]:
    """``report`` with its local inputs named relative to ``start`` (the fingerprint names the content)."""
    report = {k: v for k, v in report.items() if not k.startswith("_")}
    settings = dict(report["settings"])
    for key in [k.removesuffix(FINGERPRINT) for k in settings if k.endswith(FINGERPRINT)]:
        if isinstance(settings.get(key), str) and os.path.isabs(settings[key]):
            settings[key] = os.path.relpath(settings[key], start)
    settings.pop("output_dir", None)
    report["settings"] = settings
    return report


def collect(sources: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict[str, Any]:
    """Write each seed's report into ``out/seed_<N>/report.json`` and the combined
    ``out/report.json`` and ``out/report.md``; returns the combined report.

    ``sources`` are run folders or ``report.json`` files, including earlier collected ones (so a
    new seed is added by collecting again with the folder's own ``seed_*`` reports).
    """

    out = Path(out)
    reports = [load_seed_report(source) for source in sources]
    several = [r for r in reports if len(r["settings"]["seeds"]) != 1]
    if several:
        first = several[0]
        raise ValueError(f"{first['_path']} holds seeds {first['settings']['seeds']}; collect one seed per run")
    combined = combine(reports)
    start = Path.cwd()
    for report in reports:
        target = out / f"seed_{report['settings']['seeds'][0]}" / "report.json"
        if Path(report["_path"]).resolve() != target.resolve():
            write_json_atomic(_portable(report, start), target)
    combined = _portable(combined, start)
    write_json_atomic({k: v for k, v in combined.items() if k != "stage_table"}, out / "report.json")
    (out / "report.md").write_text(format_markdown(combined))
    write_frontier_figures(combined, out)
    return combined
