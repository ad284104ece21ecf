# The two commands the README promises: `make demo` and `make test`.
# Each creates .venv in the clone (with only Python and pip on the machine),
# installs the core, both in-tree sinks and the example sink, and runs.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SOURCES := pyproject.toml plugins/stdout/pyproject.toml plugins/ctia/pyproject.toml $(wildcard examples/*/pyproject.toml)

.PHONY: demo fleet-demo test test-fast typecheck bench bench-quick stress venv clean

$(STAMP): $(SOURCES)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# setuptools warns on every editable install that a folder named like the
	# package may shadow it; that is the point of an editable install here.
	PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -e '.[test,fleet]' -e plugins/stdout -e plugins/ctia $(patsubst %,-e %,$(wildcard examples/*))
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/exportkit demo

# A fleet on loopback: PostgreSQL, Redis, the emulators, two Celery workers and beat,
# ten instances, then `exportkit fleet status`; everything is stopped at the end.
# Needs the PostgreSQL server binaries and redis-server (.ci/servers installs them as root).
fleet-demo: $(STAMP)
	$(BIN)/python -m exportkit.fleet.demo

test: $(STAMP)
	$(BIN)/python -m pytest

# mypy --strict on exportkit/ and the plugin packages (settings in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/python -m mypy

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration"

# Random SIGKILLs while changes are delivered (a few minutes; not part of test).
stress: $(STAMP)
	$(BIN)/python tests/stress/kill_during_changes.py

# Full sizes (tens of minutes on a shared 2-core machine); writes the README table.
bench: $(STAMP)
	$(BIN)/python bench/run.py --write-readme

# Small sizes, for trying a change; prints only.
bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache
