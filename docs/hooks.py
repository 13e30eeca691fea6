"""Build-time additions to the docs site: the committed results (reports, figures, pilots) served
beside the pages that cite them, and the references that would go stale if written by hand: the
command line (from the parsers), the package layout (from the modules' docstrings) and the API
(from the table of public names)."""

from __future__ import annotations

import argparse
import ast
import io
from contextlib import redirect_stdout
from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
RESULT_SUFFIXES = {".md", ".png", ".json", ".py"}
CLI_MARKER = "<!-- cli-reference -->"
LAYOUT_MARKER = "<!-- package-layout -->"
API_MARKER = "<!-- api-reference -->"


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


#: The stage packages in the order data flows through them.
STAGES = ("core", "data", "record", "score", "curation", "measure", "publish", "experiment", "commands")


def _summary(path: Path) -> str:
    """The first sentence of a module's or package's docstring, on one line."""
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(doc.split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")


def package_layout() -> str:
    """Every stage package of ``hf_carto`` and its modules, each described by its own docstring."""
    package = REPO / "hf_carto"
    lines = []
    for stage in STAGES:
        folder = package / stage
        lines += [
            f"### `hf_carto/{stage}/`",
            "",
            _summary(folder / "__init__.py") + ".",
            "",
            "| module | what it holds |",
            "|---|---|",
        ]
        for module in sorted(folder.glob("*.py")):
            if module.name != "__init__.py":
                lines.append(f"| `{module.name}` | {_summary(module)} |")
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
            lines.append(f"| `{sub.name}/` | {_summary(sub / '__init__.py')} |")
        lines.append("")
    return "\n".join(lines)


def api_reference() -> str:
    """A section per stage, holding every module that defines a public name of ``hf_carto``."""
    import hf_carto

    modules = sorted(set(hf_carto._EXPORTS) | {m for m, _ in hf_carto._OPTIONAL_NAMES.values()})
    lines = []
    for stage in STAGES:
        mine = [m for m in modules if m.split(".")[0] == stage]
        if mine:
            lines += [f"## `hf_carto.{stage}`", ""] + [f"::: hf_carto.{m}\n" for m in mine]
    return "\n".join(lines)


def on_page_markdown(markdown, page, config, files):
    for marker, build in ((CLI_MARKER, cli_reference), (LAYOUT_MARKER, package_layout), (API_MARKER, api_reference)):
        if marker in markdown:
            markdown = markdown.replace(marker, build())
    return markdown
