# Jetbridge: every target sets up what it needs and can be run again safely.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml sdk-python/pyproject.toml | sha1sum | cut -c1-12)
# Handler languages: built ones, ones with their own unit-test runner, and all that face the conformance suite.
LANGS ?= node go rust
CONFORMANCE_LANGS ?= python node go rust shell
PYTEST_ARGS ?=

.PHONY: help venv demo test test-python test-langs interop interop-build bench image faults lint typecheck clean dist

help:
	@echo "make demo       run the dispatcher with handlers in Python, Node and Go on an embedded NATS"
	@echo "make test       everything the test suite needs, then the suite"
	@echo "make interop    the conformance suite against every language's handler"
	@echo "make bench      benchmarks; JSON on stdout and bench/results/latest.json"
	@echo "make image      build the dispatcher image and smoke-test it"
	@echo "make faults     the fault matrix at full scale (SEED=N replays that history of the checker)"
	@echo "make dist       what a release would publish (Python, npm, crate, Go module), into dist/"

venv: $(STAMP)

$(STAMP): pyproject.toml sdk-python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e sdk-python -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $@

interop-build: venv
	@for lang in $(LANGS); do echo "== build $$lang"; interop/$$lang/build.sh || exit 1; done

test: venv interop-build test-python test-langs interop

test-python: venv
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-langs: interop-build
	@for lang in $(LANGS); do echo "== unit tests: $$lang"; interop/$$lang/test.sh || exit 1; done

interop: venv interop-build
	$(PY) -m interop.conformance $(CONFORMANCE_LANGS)

demo: venv
	@$(MAKE) --no-print-directory interop-build LANGS="node go"
	$(PY) -m bridge.demo

# Wheels and sdists, the npm tarball, the crate and the Go module zip: tests/dist/build.sh says what each is.
DIST ?= dist
dist: venv
	tests/dist/build.sh $(DIST) $(PY)

bench: venv
	$(PY) -m bench

image: venv
	bash image/build.sh

faults: venv
	$(PY) -m pytest -q tests/faults tests/schedules/test_ha.py --full-scale -s $(if $(SEED),--seed $(SEED))

lint: venv
	$(VENV)/bin/ruff check bridge sdk-python tests bench interop/conformance interop/python
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) .cache .build .jetbridge dist
