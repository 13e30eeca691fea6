"""Fetch the real corpora the tests, benchmarks and README runs read, from the Hugging Face Hub,
into the layout they expect (that of ``../shared/data``):

    python scripts/fetch_data.py data      # or: make data
    export HF_CARTO_DATA=data               # where the tests and benchmarks look

- ``wikitext-2-raw/wiki.{train,valid,test}.raw``: WikiText-2, raw variant (Merity et al., 2016;
  CC BY-SA 3.0), Hub dataset ``Salesforce/wikitext``, config ``wikitext-2-raw-v1``; one line per row.
- ``gpt2-tokenizer/{vocab.json,merges.txt,tokenizer_config.json}``: GPT-2's byte-level BPE
  (OpenAI, 2019; modified MIT), Hub model ``openai-community/gpt2``.

Needs the Hub (network); this project's CI reads its local copies instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

WIKITEXT = ("Salesforce/wikitext", "wikitext-2-raw-v1")
WIKITEXT_FILES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
GPT2 = "openai-community/gpt2"
GPT2_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json")


def write_raw_lines(rows, path: Path) -> int:
    """The rows' ``text`` (each a line with its newline, as the Hub dataset stores them) written
    one after the other; returns the number of lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "w", encoding="utf-8") as f:
        for text in rows["text"]:
            f.write(text if text.endswith("\n") else text + "\n")
            count += 1
    return count


def fetch(out: Path) -> None:
    from datasets import load_dataset
    from huggingface_hub import hf_hub_download

    splits = load_dataset(*WIKITEXT)
    for split, name in WIKITEXT_FILES.items():
        lines = write_raw_lines(splits[split], out / "wikitext-2-raw" / name)
        print(f"{out / 'wikitext-2-raw' / name}: {lines:,} lines")
    for name in GPT2_FILES:
        path = hf_hub_download(GPT2, name, local_dir=out / "gpt2-tokenizer")
        print(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="data", help="Folder to write into (default: data).")
    fetch(Path(parser.parse_args(argv).out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
