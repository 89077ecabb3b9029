# One venv, pinned torch (constraints.txt), every extra. `make test` and `make demo` create it on
# first use, so each works alone on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PIP    := $(BIN)/python -m pip

# Extra arguments for the demo and the benchmarks, e.g. `make demo ARGS="--series 50 --minutes 10"`.
ARGS ?=

.PHONY: setup test test-fast demo bench bench-quality clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -c constraints.txt -e '.[train,analysis,demo,dev]'
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/pytest

test-fast: $(STAMP)
	$(BIN)/pytest -m "not integration and not e2e and not slow"

demo: $(STAMP)
	$(BIN)/vrae-worker demo $(ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py $(ARGS)

bench-quality: $(STAMP)
	$(BIN)/python benchmarks/quality.py $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
