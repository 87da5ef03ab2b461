# One entry point for set-up, tests and benchmarks. Every target builds .venv from scratch if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: test lint bench-store bench-recall clean

# The test command (README; .ci/run runs exactly this).
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy

# torch 2.13.0 is installed first on its own: it is the CPU wheel this machine carries locally, and
# a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml setup.py store/_hamming.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,export,bench]'
	touch $@

bench-store: $(VENV)/.installed
	$(PY) bench/store_bench.py

bench-recall: $(VENV)/.installed
	$(PY) bench/recall.py

clean:
	rm -rf $(VENV) build *.egg-info store/*.so
