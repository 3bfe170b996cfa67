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

# The whole suite (tests marked slow excluded) in two pytest-xdist worker processes: most
# of its time is XLA compiling, which one process runs on ~1.4 of CI's 2 cores; worksteal
# keeps both workers busy to the end. It used to be one process per file: XLA CPU keeps
# each compiled executable in memory mappings of its own and the suite hit Linux's
# vm.max_map_count after ~100 tests; tests/conftest.py now releases compiled code after
# every module (benchmarks/compile_sweep.py shows the crash and the fix).
test: venv
	$(PY) -m pytest -m "not slow" -q -n 2 --dist worksteal --durations=30

# Everything: the slow tests too, and every property test's full example count.
test-all: venv
	HYPOTHESIS_PROFILE=thorough $(PY) -m pytest -q -n 2 --dist worksteal --durations=30

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
