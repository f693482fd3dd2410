# Quick start targets: each sets up .venv (once) and then runs its job.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The versions tested; on machines of this project's kind pip takes them from local disk.
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: setup demo test bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[dev,compare,cuda,serve,ray,analysis,train,scene,export]"
	touch $@

demo: setup
	$(BIN)/slimkern demo

# the kernel benchmarks run once each as smoke tests (timing them is `pytest benchmarks --benchmark-only`)
test: setup
	$(BIN)/python -m pytest -q tests benchmarks --benchmark-disable

bench: setup
	$(BIN)/python -m benchmarks.e2e_widths
