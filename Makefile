# Two commands on a fresh machine (Python 3.11, Node 20, npm, apt):
#   make run   - set up everything once, seed demo data, serve http://localhost:3000
#   make test  - lint, then unit and end-to-end tests (installs the dev tools and Chromium)
#   make test-pg - the unit suite and the database-dependent end-to-end tests on PostgreSQL + Redis
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUN_DIR := .tools/bun
BUN := $(BUN_DIR)/node_modules/.bin/bun
PORT ?= 3000
DEMO_CUSTOMERS ?= 5000
export REFLEX_CHECK_LATEST_VERSION := false
# The npm registry the frontend packages come from. Without it Reflex times the
# registry against a mirror the app never needs (three "Failed to connect" lines
# where that mirror is out of reach). A registry already set in the environment wins.
export NPM_CONFIG_REGISTRY ?= https://registry.npmjs.org
export PATH := $(CURDIR)/$(BUN_DIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test test-pg test-shuffled setup dev lint data unit e2e bench chromium clean

# The stamp is newer than requirements.txt once it is installed: a second
# `make run` skips pip entirely.
$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

# Reflex's own bun installer downloads from the internet; the npm registry
# package works offline-from-GitHub.
$(BUN):
	npm install --silent --no-audit --no-fund --prefix $(BUN_DIR) bun@1.4.4

# Test, lint and benchmark tools (requirements-dev.txt includes requirements.txt).
$(VENV)/.dev-installed: requirements-dev.txt requirements.txt $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed $(BUN)

dev: setup $(VENV)/.dev-installed

data: setup
	$(PY) -m meiqia_app migrate
	$(PY) -m meiqia_app seed --customers $(DEMO_CUSTOMERS) --if-empty

# Reflex's own messages are kept to errors: at info and warning level it
# advises `reflex db makemigrations` and `uv pip install` (neither applies: the
# schema is the app's own Alembic migrations, the Makefile installs
# everything) and an older Node.js (bun builds the frontend). Once the app
# answers, `welcome` prints its address, the demo accounts and how to log in.
run: data
	@echo "Starting the app on http://localhost:$(PORT) (the first start builds the web frontend: a minute or two)..."
	@$(PY) -m meiqia_app welcome --url http://localhost:$(PORT) --wait 1200 &
	@$(VENV)/bin/reflex run --env prod --single-port --frontend-port $(PORT) --backend-port $(PORT) --loglevel error

chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

# Seconds, so a lint or format error fails before anything slow starts.
lint: dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Alone, the unit suite runs in two processes (both cores).
unit: dev
	$(PY) -m pytest tests/unit -q -n 2

e2e: dev chromium
	$(PY) -m pytest tests/e2e -q

# Lint first (seconds). Then the unit suite and the browser run side by side:
# the browser run mostly waits on the app and Chromium (about half a core),
# so on two cores the unit suite fits beside it. The unit suite's report is
# printed once both are done; either failing fails the target.
UNIT_LOG := .unit-tests.log
test: lint chromium
	@echo "unit tests running beside the end-to-end tests; their report follows at the end ($(UNIT_LOG))"
	@$(PY) -m pytest tests/unit -q -p no:cacheprovider > $(UNIT_LOG) 2>&1 & unit=$$!; \
	$(PY) -m pytest tests/e2e -q; e2e=$$?; \
	wait $$unit; unit_rc=$$?; \
	echo "--- unit tests ---"; cat $(UNIT_LOG); \
	echo "unit: exit $$unit_rc, end-to-end: exit $$e2e"; \
	test $$unit_rc -eq 0 -a $$e2e -eq 0

# Both suites in a random order (pytest-randomly; it prints the seed to
# replay with -p randomly --randomly-seed=N): tests must not depend on order.
test-shuffled: lint chromium
	$(PY) -m pytest -p randomly tests/unit tests/e2e -q

# Throwaway PostgreSQL and Redis (Debian packages, loopback, temp data dirs),
# stopped and deleted afterwards whatever the outcome.
PG_SERVICES_DIR ?= /tmp/meiqia-test-services
# The unit tests that use a database (the others cannot tell the databases apart:
# tests/conftest.py leaves them to `make test`), in two processes (alone here, the
# suite and PostgreSQL keep both cores busy), and the end-to-end tests marked `pg`
# (their behaviour depends on the database, Redis or two workers: docs/architecture.md
# says which and why).
test-pg: dev chromium
	@scripts/test-services.sh stop $(PG_SERVICES_DIR) >/dev/null 2>&1 || true
	eval "$$(scripts/test-services.sh start $(PG_SERVICES_DIR))" && \
	trap 'scripts/test-services.sh stop $(PG_SERVICES_DIR)' EXIT && \
	$(PY) -m pytest tests/unit -q -n 2 && $(PY) -m pytest tests/e2e -q -m pg

bench: dev
	$(PY) bench/search.py

clean:
	rm -rf .web .web-test .states $(UNIT_LOG)
