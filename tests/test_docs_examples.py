"""The README's and the documentation's runnable examples run as written: in order, in a fresh
folder, on the embedded default (nothing from this checkout but the installed package)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
# Every page with a Python block, each block a step of one program (the quickstart is also the README's).
EXECUTED = [
    "docs/quickstart.md",
    "docs/concepts.md",
    "docs/guides/python.md",
    "docs/guides/record.md",
    "docs/guides/retrain.md",
    "docs/guides/measure.md",
    "docs/guides/publish.md",
    "docs/guides/scale.md",
]
# What each page's program prints and writes when its steps did what the page says.
PRINTS = {
    "docs/quickstart.md": ["no intervention: canary extraction", "recommended policy: canary extraction"],
    "docs/concepts.md": ["'final_loss': 1.0"],  # each detector's average precision on the planted rows
    "docs/guides/python.md": ["hotspots=", "'k_range'"],  # scores, three runs, numpy, duplicates, leakage columns
    "docs/guides/record.md": ["'carto_loss_2'", "(139, 2)"],  # Trainer, callback, SFTTrainer, own loop
    "docs/guides/retrain.md": ["'gendatacarto': {'num_samples'", "'fraction_of_weight_pruned'"],
    "docs/guides/measure.md": ["# Leakage report", "Validation perplexity"],
    "docs/guides/publish.md": ["rows scored,", "rows are withheld"],
    "docs/guides/scale.md": ["'gendatacarto'", "'perplexity'"],
}
WRITES = {
    "docs/quickstart.md": ["quickstart/recommended policy/leakage/report.json"],
    "docs/concepts.md": [],
    "docs/guides/python.md": ["outputs/demo_seed0/curated/cartography.json"],
    "docs/guides/record.md": ["out/recording/carto/manifest.json", "out/loop_train/carto/manifest.json"],
    "docs/guides/retrain.md": ["out/no_intervention/config.json", "out/random/config.json"],
    "docs/guides/measure.md": ["eval/report.json", "canaries.json"],
    "docs/guides/publish.md": ["hub/curated/README.md", "hub/curated/data_map.png"],
    "docs/guides/scale.md": ["run/arms/gendatacarto/eval/report.json"],
}


def python_blocks(path: Path) -> list[str]:
    return FENCE.findall(path.read_text())


def test_the_readme_quickstart_is_the_documentation_quickstart():
    (readme,) = python_blocks(REPO / "README.md")
    (page,) = python_blocks(REPO / "docs" / "quickstart.md")
    assert readme == page


def test_every_page_with_a_python_example_is_executed():
    pages = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md") if python_blocks(p))
    assert pages == sorted(EXECUTED) == sorted(PRINTS) == sorted(WRITES)


@pytest.mark.slow
@pytest.mark.parametrize("page", EXECUTED)
def test_every_python_block_of_the_page_runs_as_written_in_a_fresh_folder(page, tmp_path):
    program = "\n".join(python_blocks(REPO / page))
    assert program.strip()
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    print(f"{page}: {time.perf_counter() - start:.1f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    for text in PRINTS[page]:
        assert text in result.stdout, (text, result.stdout[-4000:])
    for path in WRITES[page]:
        assert (tmp_path / path).is_file(), path
