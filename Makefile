# Every target creates the virtualenv on its own: `make demo` and `make test`
# work on a fresh machine that has only Python.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test test-all demo lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

# One process per test file: after ~100-120 tests in one process an XLA CPU compilation
# has crashed (segfault in a different test each time, never in a file run alone).
# Exit status 5 is pytest's "no test selected" (a file of slow tests only).
TEST_FILES := $(sort $(wildcard tests/test_*.py))

test: venv
	@failed=""; for f in $(TEST_FILES); do \
	  echo "== $$f"; $(PY) -m pytest -m "not slow" -q $$f; rc=$$?; \
	  if [ $$rc -ne 0 ] && [ $$rc -ne 5 ]; then failed="$$failed $$f"; fi; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED:$$failed"; exit 1; fi; echo "all test files passed"

test-all: venv
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests benchmarks tasks calib notebooks

# The event engine with EventProp: feed-forward single-spike layers run on the parallel
# TTFS path, with EventProp's adjoint backward pass in closed form (a custom VJP).
demo: venv
	$(PY) -m tasks.yinyang

bench: venv
	$(PY) benchmarks/event_core.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
