# One entry point for every routine task. The interpreter is found, never assumed:
# `python3` may be older than 3.12 (pyenv keeps newer ones under its versions folder).
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

PYTHON ?= $(shell \
  for c in python3.13 python3.12 python3; do \
    p=$$(command -v $$c 2>/dev/null) && "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$p"; exit 0; }; \
  done; \
  root=$$(pyenv root 2>/dev/null || echo "$$HOME/.pyenv"); \
  for p in $$(ls -d "$$root"/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -V -r); do \
    "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 12))' 2>/dev/null && { echo "$$p"; exit 0; }; \
  done)

# `make run HOST=0.0.0.0 PORT=9000`: where the API listens (beyond 127.0.0.1 only with API keys).
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install run test lint format bench eval samples clean check-outputs check-views dist

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "error: no Python >= 3.12 found (install one, or set PYTHON=/path/to/python3.12)" >&2; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing earshot and its dependencies into $(VENV) (the first time takes minutes: see README, Set-up)"
	$(BIN)/python -m pip install --disable-pip-version-check --progress-bar on -e '.[dev]'
	# numba's compiled code, cached inside the venv: a fresh `make run` loads it (~4 s) instead
	# of compiling it in every worker pool (~25 s).
	$(BIN)/earshot warmup
	@touch $(STAMP)

samples: $(STAMP)
	$(BIN)/python scripts/make_samples.py

run: $(STAMP)
	$(BIN)/earshot dev --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker/compose.yaml
	$(BIN)/hadolint docker/Dockerfile

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP)
	$(BIN)/python scripts/bench.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_service.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_pipelines.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_chunks.py $(BENCH_ARGS)
	$(BIN)/python scripts/bench_goals.py $(BENCH_ARGS)

# Key and tempo accuracy on .eval/ (built on first use by scripts/make_eval_set.py), side by side
# with Essentia and a tutorial librosa pipeline; the table goes into docs/accuracy.md.
eval: $(STAMP)
	$(BIN)/python -c 'import music21, essentia' 2>/dev/null || $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[eval]'
	$(BIN)/python scripts/eval_accuracy.py $(EVAL_ARGS)

# Are result.json, frames.csv and frames.npz byte-identical between revisions? REF is one ref
# (against the working tree) or two: `make check-outputs REF="bbe896d HEAD" CHECK_ARGS=--tracks`.
check-outputs: $(STAMP)
	@test -n "$(REF)" || { echo 'error: give REF=<git ref> (or REF="A B")' >&2; exit 2; }
	$(BIN)/python scripts/check_outputs.py $(foreach r,$(REF),--ref $(r)) $(CHECK_ARGS)

# The Spotify-shaped views of real music (the bench's wesnoth tracks unless VIEWS_ARGS names
# files) against the served OpenAPI schemas and the rules docs/spotify.md lists.
check-views: $(STAMP)
	$(BIN)/python scripts/check_views.py $(VIEWS_ARGS)

# The sdist and the wheel under dist/, built in an isolated environment as a release is.
dist: $(STAMP)
	$(BIN)/python -m build --outdir dist .

clean:
	rm -rf var dist build .pytest_cache .mypy_cache .ruff_cache
