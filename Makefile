# certgraph build/tooling entry points. See `make help`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SRC := domain resolvers graphql_engine server
LINT_PATHS := $(SRC) tests bench
PYTEST_ARGS ?=

# Environment for a local development server (`make run`).
RUN_ENV := CERTGRAPH_ENV=development CERTGRAPH_AUTH=off CERTGRAPH_SANDBOX=1 \
	CERTGRAPH_CA_AUTO_DECIDE_SECONDS=5

.PHONY: help install lint test run lock browser-deps pebble-deps bench bench-deps soak clean

help:
	@echo "make install       create .venv and install certgraph[dev] pinned by constraints.txt"
	@echo "make lint          ruff check + ruff format --check + mypy --strict"
	@echo "make test          install, browser-deps, pebble-deps, lint, then pytest (PYTEST_ARGS=...)"
	@echo "make run           migrate, seed demo data and serve on 127.0.0.1:8000"
	@echo "make lock          regenerate constraints.txt from a fresh, unconstrained resolve"
	@echo "make browser-deps  install Debian's chromium for the browser tests if missing"
	@echo "make pebble-deps   install Debian's pebble (ACME test server) for the ACME tests if missing"
	@echo "make bench         seed, serve and load certgraph and the floor; print the table (BENCH_ARGS=...)"
	@echo "make soak          the hostile set of issue 12 against a live server: stalls, RSS (SOAK_ARGS=--quick)"
	@echo "make clean         remove the venv, caches and build output"

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e '.[dev]'
	touch $@

lint: install
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/mypy

test: install browser-deps pebble-deps
	$(MAKE) lint
	$(BIN)/pytest $(PYTEST_ARGS)

run: install
	$(RUN_ENV) $(BIN)/certgraph migrate && \
	$(RUN_ENV) $(BIN)/certgraph seed && \
	$(RUN_ENV) $(BIN)/certgraph serve --host 127.0.0.1 --port 8000

# The ACME tests (tests/acme) run Let's Encrypt's Pebble and pebble-challtestsrv.
pebble-deps:
	@command -v pebble >/dev/null 2>&1 && command -v pebble-challtestsrv >/dev/null 2>&1 || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y pebble)

# Browser tests drive Debian's chromium (/usr/bin/chromium) through Playwright;
# Playwright's own browser download does not work on these machines.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)

# Resolve the newest versions allowed by pyproject.toml in a throwaway venv and
# pin every installed distribution (runtime + dev) with ==.
# Benchmarks (bench/README.md): seeds its own data, starts certgraph and the floor on loopback,
# drives them with wrk and prints the table; e.g. BENCH_ARGS="--certs 1000000 --duration 20".
bench: install bench-deps
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-deps: $(VENV)/.bench-installed
	@command -v wrk >/dev/null 2>&1 || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y wrk)

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $@

# The soak (bench/README.md): seeds one large tenant, serves it, sends the hostile set while
# timing /healthz and a WebSocket ping; e.g. SOAK_ARGS="--quick" or "--certs 500000".
soak: install
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

lock:
	@set -euo pipefail; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp/venv"; \
	"$$tmp/venv/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/venv/bin/python" -m pip install --quiet -e '.[dev,bench]'; \
	{ \
	  echo "# Exact pins of every package in certgraph's dependency tree (runtime + [dev])."; \
	  echo "# Produced by \`make lock\`: a fresh Python 3.11 venv, \`pip install -e '.[dev,bench]'\` with"; \
	  echo "# no constraints (newest versions pip resolves), then \`pip freeze --exclude-editable\`."; \
	  echo "# Regenerate with \`make lock\` after changing dependencies in pyproject.toml;"; \
	  echo "# \`make install\` installs with \`pip install -c constraints.txt -e '.[dev]'\`."; \
	  "$$tmp/venv/bin/python" -m pip freeze --exclude-editable; \
	} > constraints.txt.new; \
	mv constraints.txt.new constraints.txt; \
	echo "constraints.txt: $$(grep -c '==' constraints.txt) pins"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist \
		test-artifacts *.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
