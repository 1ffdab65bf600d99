# The two commands: `make run` serves, `make test` checks everything.
# Both set up what they need on a fresh machine first.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# Two installs into one venv: SERVE_STAMP is what serving needs (`make run`),
# STAMP adds the dev tools (pytest, ruff, mypy, playwright, ...) for the rest.
SERVE_STAMP := $(VENV)/.serve-stamp
STAMP  := $(VENV)/.installed-stamp
# The version lives in runyard/__init__.py: a new one re-installs the metadata.
INSTALL_INPUTS := pyproject.toml runyard/__init__.py
COUCH_DIR := tests/couchdb

.PHONY: run test test-fast lint fmt install couchdb-deps browser-deps nginx-deps bench fuzz clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(SERVE_STAMP): $(INSTALL_INPUTS) | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $(SERVE_STAMP)

# The dev install holds the serving one too, so it satisfies `make run` as well.
$(STAMP): $(INSTALL_INPUTS) | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP) $(SERVE_STAMP)

install: $(STAMP)

run: $(SERVE_STAMP)
	$(VENV)/bin/runyard serve

# The CouchDB-compatible server the store tests run against (pouchdb-server,
# patched by a preload to answer like Apache CouchDB 3).
couchdb-deps: $(COUCH_DIR)/node_modules/.installed-stamp

$(COUCH_DIR)/node_modules/.installed-stamp: $(COUCH_DIR)/package.json $(COUCH_DIR)/package-lock.json
	cd $(COUCH_DIR) && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

# Browser tests use Debian's Chromium; a browser download never works here.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The multi-node tests put Debian's nginx in front of three servers (each
# test starts its own nginx on loopback ports, config in a tmp dir).  The
# package's own service must not start on port 80: a policy-rc.d that denies
# every start is put in place for the install when the machine has none.
nginx-deps:
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || { \
	  echo "installing Debian's nginx (its system service is not started)"; \
	  policy=/usr/sbin/policy-rc.d; made=; \
	  if [ ! -e $$policy ]; then printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy && made=1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null; \
	  status=$$?; if [ -n "$$made" ]; then rm -f $$policy; fi; exit $$status; }

lint: $(STAMP)
	$(VENV)/bin/ruff check runyard actors web persistence tests bench
	$(VENV)/bin/ruff format --check runyard actors web persistence tests bench
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format runyard actors web persistence tests bench
	$(VENV)/bin/ruff check --fix runyard actors web persistence tests bench

test: $(STAMP) couchdb-deps browser-deps nginx-deps lint
	$(PY) -m pytest

# The edit loop: everything but the suites that start servers, CouchDB or a
# browser (markers `server`, `couchdb`, `browser`), and no lint.  `make test`
# still runs everything.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not server and not couchdb and not browser"

# The API fuzzed from its OpenAPI schema against a real server (a few minutes):
# no answer may be a 5xx.  FUZZ_SECONDS sets the time budget.
FUZZ_SECONDS ?= 180
fuzz: $(STAMP)
	$(PY) -m tests.fuzz_api --seconds $(FUZZ_SECONDS)

bench: $(STAMP) couchdb-deps nginx-deps
	$(PY) -m bench

clean:
	rm -rf $(VENV) $(COUCH_DIR)/node_modules .mypy_cache .ruff_cache .pytest_cache
