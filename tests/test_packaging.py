"""What an installed package needs beyond the code: its data files, and a light import."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import hf_carto
from hf_carto.publish.dataset_card import DATASET_CARD_TEMPLATE
from hf_carto.publish.model_card import MODEL_CARD_TEMPLATE

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = Path(hf_carto.__file__).resolve().parent
#: Libraries that take seconds to import; `import hf_carto` and `hf-carto --help` need none of them.
HEAVY = ("torch", "transformers", "datasets", "accelerate", "scipy", "matplotlib", "huggingface_hub", "pyarrow")


def test_packaged_model_card_template_is_the_documented_copy():
    documented = REPO_ROOT / "model_cards" / "curated_model.md"
    packaged = PACKAGE_DIR / "publish" / "templates" / "curated_model.md"
    assert packaged.read_bytes() == documented.read_bytes(), (
        f"{packaged.relative_to(REPO_ROOT)} and {documented.relative_to(REPO_ROOT)} differ: "
        "edit one and copy it over the other"
    )


def test_the_cards_read_their_templates_inside_the_package():
    for packaged in (MODEL_CARD_TEMPLATE, DATASET_CARD_TEMPLATE):
        template = Path(str(packaged)).resolve()
        assert template.is_file()
        assert template.is_relative_to(PACKAGE_DIR)


def test_the_template_is_declared_as_package_data():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    patterns = config["options.package_data"]["hf_carto"].replace(",", " ").split()
    for name in ("curated_model.md", "dataset_card.md"):
        template = (PACKAGE_DIR / "publish" / "templates" / name).relative_to(PACKAGE_DIR).as_posix()
        assert any(fnmatch.fnmatch(template, pattern) for pattern in patterns), patterns


def _imported_after(code: str) -> list[str]:
    """The heavy top-level modules loaded by running ``code`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    script = f"{code}\nimport json, sys\nprint(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=True, timeout=120
    )
    loaded = json.loads(result.stdout.splitlines()[-1])
    return [name for name in HEAVY if name in loaded]


def test_import_and_command_line_parser_load_no_heavy_library():
    assert _imported_after("import hf_carto") == []
    assert _imported_after("from hf_carto.commands.main import make_parser\nmake_parser()") == []


def test_every_public_name_resolves_lazily():
    names = set(dir(hf_carto))
    assert sorted(hf_carto.__all__) == sorted(hf_carto._NAME_TO_SUBMODULE)  # the table and the list agree
    for name in hf_carto.__all__:
        assert name in names
        value = getattr(hf_carto, name)
        assert getattr(value, "__name__", name) == name, name
    assert hf_carto.__version__ == "0.1.0"
    from hf_carto import difficulty, render_model_card  # noqa: F401  (the `from` form)


@pytest.mark.slow
def test_the_wheel_builds_without_setuptools_warnings_and_holds_the_data_files(tmp_path):
    import shutil
    import zipfile

    # A copy of what git would ship (tracked and not ignored), so the build writes nothing into the checkout.
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], capture_output=True, cwd=REPO_ROOT, check=True
    ).stdout.decode()
    source = tmp_path / "source"
    for name in filter(None, listed.split("\0")):
        if (REPO_ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, source / name)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-v", str(source)],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    for warning in ("Warning:", "is absent from the `packages` configuration", "License classifiers are deprecated"):
        assert warning not in log, log[log.find(warning) - 400 : log.find(warning) + 1200]
    [wheel] = tmp_path.glob("hf_carto-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    metadata = zipfile.ZipFile(wheel).read("hf_carto-0.1.0.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in metadata.splitlines()
    expected = [p.relative_to(source).as_posix() for p in (source / "hf_carto").rglob("*") if p.is_file()]
    assert sorted(set(expected) - names) == []
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_readme_activates_the_virtualenv_before_its_first_command():
    """`make` installs into .venv; the `accelerate` and `hf-carto` lines of the README and of the
    set-up page need that environment, so each says to activate it before its first such line."""
    import re

    readme = (REPO_ROOT / "README.md").read_text()
    assert "source .venv/bin/activate" in readme, "the README never says to activate .venv"
    for path in (REPO_ROOT / "README.md", REPO_ROOT / "docs" / "setup.md"):
        text = path.read_text()
        commands = [m.start() for m in re.finditer(r"^(accelerate launch|hf-carto) ", text, flags=re.MULTILINE)]
        if commands:
            activate = text.find("source .venv/bin/activate")
            assert 0 <= activate < min(commands), (path, text[min(commands) - 200 : min(commands) + 100])
