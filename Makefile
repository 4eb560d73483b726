# Two commands on a fresh machine (Python 3.11, Node 20, npm, apt):
#   make run   - set up everything once, seed demo data, serve http://localhost:3000
#   make test  - the same set-up plus Chromium, then unit and end-to-end tests
#   make test-pg - both suites again on PostgreSQL + Redis with two backend workers
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BUN_DIR := .tools/bun
BUN := $(BUN_DIR)/node_modules/.bin/bun
PORT ?= 3000
DEMO_CUSTOMERS ?= 5000
export REFLEX_CHECK_LATEST_VERSION := false
export PATH := $(CURDIR)/$(BUN_DIR)/node_modules/.bin:$(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test test-pg setup data unit e2e bench chromium clean

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

setup: $(VENV)/.installed $(BUN)

data: setup
	$(PY) -m meiqia_app migrate
	$(PY) -m meiqia_app seed --customers $(DEMO_CUSTOMERS) --if-empty

run: data
	@$(PY) -m meiqia_app demo-accounts
	@echo "Open http://localhost:$(PORT)/login, log in with a demo account and the code from your authenticator app."
	$(VENV)/bin/reflex run --env prod --single-port --frontend-port $(PORT) --backend-port $(PORT)

chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium; fi; }

unit: setup
	$(PY) -m pytest tests/unit -q

e2e: setup chromium
	$(PY) -m pytest tests/e2e -q

# Unit tests first: fast feedback, and they fail before the slow browser run.
test: setup chromium
	$(PY) -m pytest tests/unit tests/e2e -q

# Throwaway PostgreSQL and Redis (Debian packages, loopback, temp data dirs),
# stopped and deleted afterwards whatever the outcome.
PG_SERVICES_DIR ?= /tmp/meiqia-test-services
test-pg: setup chromium
	@scripts/test-services.sh stop $(PG_SERVICES_DIR) >/dev/null 2>&1 || true
	eval "$$(scripts/test-services.sh start $(PG_SERVICES_DIR))" && \
	trap 'scripts/test-services.sh stop $(PG_SERVICES_DIR)' EXIT && \
	$(PY) -m pytest tests/unit tests/e2e -q

bench: setup
	$(PY) bench/search.py

clean:
	rm -rf .web .web-test .states
