# The two commands a newcomer needs: `make run` serves the IdP on the embedded SQLite database,
# `make test` installs everything the tests need (system packages included) and runs the whole suite.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test test-fast lint docs bench clean

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

clean:
	rm -rf $(VENV) data .pytest_cache
