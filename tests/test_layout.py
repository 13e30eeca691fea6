"""The package is a house of stages: every module lives in a stage package, imports only from its
own stage or earlier ones, the import graph has no cycle, and no module outgrows ~500 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import hf_carto

PACKAGE = Path(hf_carto.__file__).resolve().parent
#: The order data flows through the stages; an import may point back along it, never forward.
STAGES = ("core", "data", "record", "score", "curation", "measure", "publish", "experiment", "commands")
MAX_LINES = 500


def _modules(package: Path = PACKAGE) -> dict[str, Path]:
    found = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package).with_suffix("").parts
        if "metrics" in parts[:-1] and parts[-1] != "__init__":
            continue  # the standalone `evaluate` metric scripts
        name = ".".join(("hf_carto", *parts)).removesuffix(".__init__")
        found[name] = path
    return found


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``hf_carto`` module ``path`` imports, at any depth (function bodies included)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("hf_carto"):
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("hf_carto")]
    return out


def _stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def forward_imports(modules: dict[str, Path]) -> list[str]:
    """Imports that point forward along the stages, or go through ``hf_carto`` itself."""
    found = []
    for name, path in modules.items():
        if name == "hf_carto":
            continue
        mine = STAGES.index(_stage(name))
        for line, target in _imports(path):
            stage = _stage(target)
            if stage is None:
                found.append(f"{name}:{line} imports hf_carto itself (import from the defining module)")
            elif STAGES.index(stage) > mine:
                found.append(f"{name}:{line} -> {target}")
    return found


def find_cycle(modules: dict[str, Path]) -> list[str] | None:
    """One import cycle among ``modules`` (depth-first search), or None."""
    graph = {
        name: sorted({t for _, t in _imports(path) if t in modules and t not in (name, "hf_carto")})
        for name, path in modules.items()
    }
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start, [])):
            return cycle
    return None


def test_every_module_lives_in_a_stage_package():
    loose = [name for name in _modules() if name != "hf_carto" and _stage(name) not in STAGES]
    assert loose == []
    assert {p.parent.name for p in PACKAGE.glob("*/__init__.py")} == set(STAGES)


def test_no_import_points_forward_along_the_stages_or_through_the_top_level():
    assert forward_imports(_modules()) == []


def test_the_import_graph_has_no_cycle():
    assert find_cycle(_modules()) is None


def test_no_module_outgrows_the_size_a_reader_can_hold():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_two_modules_share_a_name():
    names = [path.name for path in _modules().values() if path.name != "__init__.py"]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_the_checks_catch_a_forward_import_and_a_cycle(tmp_path):
    files = {
        "core/__init__.py": "",
        "core/a.py": "from hf_carto.score.b import f\n",  # forward: core -> score
        "score/__init__.py": "",
        "score/b.py": "def f():\n    from hf_carto.score.c import g\n",
        "score/c.py": "from hf_carto.score.b import f\nimport hf_carto\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    modules = _modules(tmp_path)
    assert sorted(forward_imports(modules)) == [
        "hf_carto.core.a:1 -> hf_carto.score.b",
        "hf_carto.score.c:2 imports hf_carto itself (import from the defining module)",
    ]
    assert find_cycle(modules) in (
        ["hf_carto.score.b", "hf_carto.score.c", "hf_carto.score.b"],
        ["hf_carto.core.a", "hf_carto.score.b", "hf_carto.score.c", "hf_carto.score.b"],
    )
