"""Build-time additions to the docs site: the committed results (reports, figures, pilots) served
beside the pages that cite them, and the command-line reference generated from the parsers."""

from __future__ import annotations

import argparse
import io
from contextlib import redirect_stdout
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
RESULT_SUFFIXES = {".md", ".png", ".json", ".py"}
CLI_MARKER = "<!-- cli-reference -->"


def on_files(files, config):
    """Every committed file under results/ joins the site at results/..., so pages link to it."""
    for path in sorted((REPO / "results").rglob("*")):
        if path.is_file() and path.suffix in RESULT_SUFFIXES:
            uri = path.relative_to(REPO).as_posix()
            if path.suffix == ".md":  # served as a file to read, not rendered as a page of the site
                files.append(File.generated(config, uri.removesuffix(".md") + ".md", abs_src_path=str(path)))
            else:
                files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def _help(parser: argparse.ArgumentParser) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        parser.print_help()
    return out.getvalue()


def cli_reference() -> str:
    """``hf-carto --help`` and every command's help, as the parsers print them."""
    from hf_carto.commands.main import make_parser

    parser = make_parser()
    lines = ["## `hf-carto`", "", "```text", _help(parser).rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        lines += [f"## `hf-carto {name}`", "", "```text", _help(command).rstrip(), "```", ""]
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    if CLI_MARKER in markdown:
        return markdown.replace(CLI_MARKER, cli_reference())
    return markdown
