# Two commands on a fresh machine: `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup run test bench-serve bench-learn demo simulate clean

setup: $(STAMP) redis-server

# torch==2.13.0 first: on CPU machines a plain `torch` requirement would pull
# several GB of CUDA wheels (DESIGN.md, "Facts measured").
$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[test]"
	touch $(STAMP)

# The embedded default and the tests run their own redis-server; install it
# from Debian's packages where it is missing.
.PHONY: redis-server
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q redis-server; }

run: setup
	$(VENV)/bin/tailor up

test: setup
	$(PY) -m pytest tests

bench-serve: setup
	$(VENV)/bin/tailor bench serve

bench-learn: setup
	$(VENV)/bin/tailor bench learn

demo: setup
	$(VENV)/bin/tailor demo

clean:
	rm -rf $(VENV) .tailor
