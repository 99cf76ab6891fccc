# Two commands on a fresh machine: `make run` and `make test` (README).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed

.PHONY: setup run test bench-serve bench-learn demo simulate clean check-faults

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

# The end users' page is tested in a real browser: Debian's chromium, driven by
# Playwright with executable_path (tests/service/test_page.py).
.PHONY: chromium
chromium:
	@command -v chromium >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -q && $$SUDO apt-get install -y -q chromium; }

run: setup
	$(VENV)/bin/tailor up

test: setup chromium
	$(PY) -m pytest tests -m "not hhh_loop" --durations=25

# Issue 12's six-user closed loop on a corpus-v3 build (README, "Honest and harmless for
# everyone"): ~20 min on 2 cores, ~3 more the first time (the build). Not in `make test`.
.PHONY: check-hhh
check-hhh: setup
	$(PY) -m pytest tests/simulation/test_honest_harmless_loop.py -m hhh_loop -v

bench-serve: setup
	$(VENV)/bin/tailor bench serve

bench-learn: setup
	$(VENV)/bin/tailor bench learn

demo: setup
	$(VENV)/bin/tailor demo

# Load and faults against a Tailor of its own, loopback only (README, "Load and faults"):
# ~12 min on 2 cores. Not in `make test`; its fast part is (tests/benchmarks/test_check_faults.py).
check-faults: setup
	$(VENV)/bin/tailor check-faults $(ARGS)

# The real Open WebUI rates a Tailor answer and the rating arrives in Tailor (README,
# "Use it with Open WebUI"). Not in `make test`: Open WebUI is ~260 packages (~3 GB)
# in a venv of its own, torch==2.13.0 first for the same reason as above.
OPENWEBUI_VENV := .openwebui-venv
OPENWEBUI_VERSION := 0.12.4
OPENWEBUI_STAMP := $(OPENWEBUI_VENV)/.installed-$(OPENWEBUI_VERSION)

$(OPENWEBUI_STAMP):
	test -x $(OPENWEBUI_VENV)/bin/python || $(PYTHON) -m venv $(OPENWEBUI_VENV)
	$(OPENWEBUI_VENV)/bin/python -m pip install -q --upgrade pip
	$(OPENWEBUI_VENV)/bin/python -m pip install -q torch==2.13.0
	$(OPENWEBUI_VENV)/bin/python -m pip install -q open-webui==$(OPENWEBUI_VERSION)
	touch $(OPENWEBUI_STAMP)

.PHONY: check-openwebui
check-openwebui: setup $(OPENWEBUI_STAMP)
	$(PY) -m commands.check_openwebui --open-webui $(OPENWEBUI_VENV)/bin/open-webui

clean:
	rm -rf $(VENV) $(OPENWEBUI_VENV) .tailor
