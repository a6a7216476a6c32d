# jointcxr: the two commands (`make demo`, `make test`) plus `make bench`.
# Each creates .venv with python3 if missing and installs the package into it;
# re-running is quick because installation is keyed on setup.cfg.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
PYTEST_WORKERS ?= 2
DEMO_OUT ?= demo_out

.PHONY: test demo bench install clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -U pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -n $(PYTEST_WORKERS) -q --durations=25 -m "not serial" tests
	# Multi-process jax.distributed tests alone: gloo gives a peer 30 s to
	# join a collective, which a CPU shared with other tests can exceed.
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m pytest -q --durations=5 -m serial tests

demo: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m jointcxr.demo --output_dir=$(DEMO_OUT)

bench: $(STAMP)
	TF_CPP_MIN_LOG_LEVEL=2 $(PY) -m bench.run_all --output_dir=bench/results

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
