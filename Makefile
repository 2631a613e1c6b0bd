# Set-up and the everyday commands. Each target installs what it needs into .venv first.
#   make demo   run the whole bot offline: the sandbox Hub with its sample repos and a dry-run scan
#   make test   run the test suite
#   make lint   ruff (rules and format), actionlint on the workflows, action.yml against its schema
# torch is pinned to the CPU wheel 2.13.0 first, so nothing pulls a multi-GB CUDA build.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install --quiet --disable-pip-version-check

.PHONY: demo test lint smoke-core install install-test install-lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e .

install-test: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test]"

install-lint: $(BIN)/python
	$(PIP) torch==2.13.0
	$(PIP) -e ".[test,lint]"

demo: install
	$(BIN)/lora-bot demo

test: install-test
	$(BIN)/python -m pytest -n 2

# The commands a user runs right after `make demo`, on the core install alone (no test extra): inspect, resize
# down and up, and explain, on the demo's own sample files. CI runs it before anything installs the test extra.
SMOKE := $(shell mktemp -d -u /tmp/lora-bot-smoke-XXXXXX)
smoke-core: install
	$(BIN)/lora-bot demo --samples-dir $(SMOKE)/repos > $(SMOKE).demo.txt
	$(BIN)/lora-bot inspect $(SMOKE)/repos/demo/facechain-style-lora; test $$? -eq 1  # exit 1: an error finding
	$(BIN)/lora-bot inspect $(SMOKE)/repos/demo/healthy-lora
	$(BIN)/lora-bot resize $(SMOKE)/repos/demo/flux-dog-r32/pytorch_lora_weights.safetensors --rank 8 -o $(SMOKE)/r8.safetensors
	$(BIN)/lora-bot resize $(SMOKE)/repos/demo/facechain-style-lora --rank 8 -o $(SMOKE)/facechain-r8
	$(BIN)/lora-bot inspect $(SMOKE)/facechain-r8 --json | grep -q '"rank": 8'
	$(BIN)/lora-bot explain rank-mismatch-config
	rm -rf $(SMOKE) $(SMOKE).demo.txt

lint: install-lint
	$(BIN)/ruff check bot tests benchmarks
	$(BIN)/ruff format --check bot tests benchmarks
	$(BIN)/python -m pytest -q -m lint

clean:
	rm -rf $(VENV) .lora-bot
