# Set-up and everyday commands. Every target creates and fills the virtualenv it needs.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install browser data demo docs test lint bench wheel-check clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

## The default job: the GPT-2 recipe's CPU preset on the generated corpus (no downloads, a few
## minutes): mapping run, scores, every arm, leakage evaluation, report. A rerun resumes.
demo: $(STAMP)
	$(PY) recipes/gpt2_wikitext.py --preset cpu-demo

lint: $(STAMP)
	$(VENV)/bin/ruff check hf_carto tests benchmarks recipes scripts docs/hooks.py
	$(VENV)/bin/ruff format --check hf_carto tests benchmarks recipes scripts docs/hooks.py

## The real corpora the tests read (WikiText-2 raw, GPT-2's tokenizer), from the Hub, into data/;
## then `export HF_CARTO_DATA=data`. Not needed where ../shared/data exists (this project's CI).
data: $(STAMP)
	$(PY) scripts/fetch_data.py data

## The documentation site, built strictly (a broken link or docstring fails), into site/.
docs: $(STAMP)
	$(PY) -m pip install --quiet -e ".[docs]"
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## A real headless browser for the interactive data map's test: Debian's chromium and its
## chromedriver (root). Without them that test tries the same install, then skips, saying so loudly.
browser:
	@command -v chromium > /dev/null && command -v chromedriver > /dev/null || \
	{ apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium chromium-driver; } || \
	echo "make browser: could not install chromium; the data map's browser test will be skipped" >&2

## Lint, then every test (slow ones included) and the docstring examples.
## pytest's exit status 5 (no test collected) is a failure here, with its own message.
test: lint browser
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

## Speed and memory: each script prints ratios against a baseline run in the same process.
bench: $(STAMP)
	$(PY) benchmarks/bench_scores.py
	$(PY) benchmarks/bench_recording.py
	$(PY) benchmarks/bench_trainer.py
	$(PY) benchmarks/bench_eval.py
	$(PY) benchmarks/bench_import.py

## The package as users get it: build the wheel from a copy of what it is built from, install it
## alone (--no-deps) into a fresh virtualenv and, from a folder outside the repository, import
## hf_carto from that virtualenv, render a model card and run `hf-carto --help`. This catches what
## the editable install of the other targets hides: files outside the package, missing package data.
## The dependencies are not installed again: they are the pinned ones already in $(VENV) (torch's
## CPU build would otherwise be downloaded again), made visible through a .pth file that lists
## $(VENV)'s site-packages. A plain path in a .pth file does not run the .pth files of that folder,
## so the editable install of hf_carto in $(VENV) stays invisible to the fresh virtualenv.
wheel-check: $(STAMP)
	@set -eu; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	mkdir "$$tmp/src" "$$tmp/run"; \
	cp -R setup.cfg pyproject.toml README.md hf_carto "$$tmp/src/"; \
	$(PY) -m pip wheel --quiet --no-deps "$$tmp/src" -w "$$tmp/dist"; \
	wheel=$$(ls "$$tmp"/dist/hf_carto-*.whl); echo "wheel-check: built $$(basename "$$wheel")"; \
	$(PY) -m venv --without-pip "$$tmp/venv"; \
	$(PY) -m pip --python "$$tmp/venv/bin/python" install --quiet --no-deps "$$wheel"; \
	site=$$("$$tmp/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'); \
	$(PY) -c 'import sysconfig; print(*sorted({sysconfig.get_path(k) for k in ("purelib", "platlib")}), sep="\n")' \
		> "$$site/hf_carto_wheel_check_deps.pth"; \
	cd "$$tmp/run"; \
	env -u PYTHONPATH -u PYTHONHOME "$$tmp/venv/bin/python" -c "$$WHEEL_CHECK_PY"; \
	env -u PYTHONPATH -u PYTHONHOME "$$tmp/venv/bin/hf-carto" --help > /dev/null; \
	echo "wheel-check: hf-carto --help runs from the wheel"

## Run by wheel-check with the fresh virtualenv's python, outside the repository.
define WHEEL_CHECK_PY
import sys
from pathlib import Path

import hf_carto

where = Path(hf_carto.__file__).resolve()
assert where.is_relative_to(Path(sys.prefix).resolve()), f"hf_carto imported from {where}, not the wheel"
card = hf_carto.render_model_card(
    repo_id="someone/wheel-check",
    base_model="gpt2",
    dataset_id="someone/curated",
    curation={"alpha": 0.5},
    results=[{"arm": "gendatacarto", "perplexity": 10.0}],
)
assert card.strip() and "someone/wheel-check" in card, card
print(f"wheel-check: {where.parent} rendered a {len(card)}-character model card")
from hf_carto.experiment import PRESETS

assert {"cpu-demo", "cpu-leaky", "cpu-tiny"} <= set(PRESETS), sorted(PRESETS)
print(f"wheel-check: the wheel holds the experiment's {len(PRESETS)} presets")
endef
export WHEEL_CHECK_PY

clean:
	rm -rf $(VENV) outputs site quickstart .pytest_cache .ruff_cache *.egg-info
