# Set-up and everyday commands. Every target creates and fills the virtualenv it needs.
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The CPU build of torch: an unpinned torch would pull a multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: install demo test lint bench clean

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
	$(VENV)/bin/ruff check hf_carto tests benchmarks recipes
	$(VENV)/bin/ruff format --check hf_carto tests benchmarks recipes

## Lint, then every test (slow ones included) and the docstring examples.
## pytest's exit status 5 (no test collected) is a failure here, with its own message.
test: lint
	@$(PY) -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

## Speed and memory: each script prints ratios against a baseline run in the same process.
bench: $(STAMP)
	$(PY) benchmarks/bench_scores.py
	$(PY) benchmarks/bench_recording.py
	$(PY) benchmarks/bench_trainer.py
	$(PY) benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache *.egg-info
