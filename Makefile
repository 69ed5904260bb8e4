# Two entry points (see README): `make demo` and `make test`. Each sets up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is locked to the CPU build for the project's own set-up; users get the loose `torch>=2.3`.
TORCH_LOCK := torch==2.13.0

.PHONY: setup demo test test-fast lint bench clean

$(BIN)/metaunsup: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH_LOCK)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(BIN)/metaunsup

setup: $(BIN)/metaunsup

demo: setup
	$(BIN)/metaunsup demo

lint: setup
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

# Tests run in TEST_WORKERS processes (pytest-xdist; 2 by default, one per core of the 2-core
# machines CI runs on; TEST_WORKERS=0 runs them in this process, one after the other).
TEST_WORKERS ?= 2

test: setup lint
	METAUNSUP_DATA=$${METAUNSUP_DATA:-$(abspath ../shared/datasets)} $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The edit-test loop: everything but the tests marked slow (well under 2 minutes on 2 cores).
test-fast: setup
	METAUNSUP_DATA=$${METAUNSUP_DATA:-$(abspath ../shared/datasets)} $(BIN)/python -m pytest -q -n $(TEST_WORKERS) -m "not slow"

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
