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

test: venv
	$(PY) -m pytest -m "not slow" -q

test-all: venv
	$(PY) -m pytest -q

lint: venv
	$(PY) -m ruff check src tests benchmarks tasks calib notebooks

# The event engine's exact gradients on the parallel TTFS path (about 10 minutes on 2 cores).
# `--grad eventprop` gives the same gradients (tested) through the event loop, ~9x slower.
demo: venv
	$(PY) -m tasks.yinyang --grad analytic

bench: venv
	$(PY) benchmarks/event_core.py

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
