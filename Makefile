# The two commands a newcomer needs: `make run` serves the IdP on the embedded SQLite database,
# `make test` installs everything the tests need (system packages included) and runs the whole suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint docs catalogs screenshots bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(VENV)/.installed $@

run: $(VENV)/.installed
	$(BIN)/idp serve

test: $(VENV)/.installed-test lint
	scripts/ensure-test-services.sh
	$(BIN)/pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check idp enrollment directory_sync tests
	$(BIN)/mypy idp enrollment directory_sync

test-fast: $(VENV)/.installed-test
	IDP_TEST_BACKENDS=sqlite $(BIN)/pytest -m "not e2e"

docs: $(VENV)/.installed
	$(BIN)/idp config reference > docs/configuration.md

# Extract the texts of templates (_()) and Python (N_()) and merge them into idp/locales/{de,en}; then translate
# the new German entries (tests/test_i18n.py fails until every one is). The .po files are read at start.
catalogs: $(VENV)/.installed-test
	$(BIN)/python scripts/update-catalogs.py

# Screenshots of the main pages at 1280 and 375 px, German and English, default and musterstadt themes, for
# human review (not part of `make test`).
screenshots: $(VENV)/.installed-test
	scripts/ensure-test-services.sh
	$(BIN)/python -m tests.browser.screenshots build/screenshots

# The protocol benchmark against node-oidc-provider (bench/README.md; about 10 minutes, on a quiet machine);
# writes its table into bench/README.md. Needs wrk (apt) and npm; not part of `make test`.
bench: $(VENV)/.installed-test
	scripts/ensure-test-services.sh
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) data .pytest_cache .cache build
