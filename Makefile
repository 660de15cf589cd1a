# The two front-door commands: `make demo` and `make test` (see README).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
DEMO ?= build/demo
export PATH := $(BIN):$(PATH)
export DVC_NO_ANALYTICS := 1
export MLFLOW_DISABLE_TELEMETRY := true
export PYTHONHASHSEED := 0

.PHONY: install demo test test-fast data repro bench clean-demo

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/pip install -q -e '.[cpu,dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv and install the package with its pinned dependencies

demo: $(STAMP)  ## run the pipeline on the embedded synthetic data at demo size, in $(DEMO)
	mura workspace $(DEMO) --override params.demo.yaml --synth
	cd $(DEMO) && dvc repro
	@echo; echo "SYNTHETIC demo finished in $(DEMO) (not patient data)."
	@cd $(DEMO) && dvc metrics show

test: $(STAMP)  ## run the whole test suite
	pytest -q

test-fast: $(STAMP)  ## unit tests only
	pytest -q -m "not slow"

data: $(STAMP)  ## write the synthetic datasets at the params.yaml size into data/raw/synthetic
	mura synth data/raw/synthetic

repro: $(STAMP)  ## dvc repro in the repository (real or synthetic data per params.yaml)
	dvc repro

bench: $(STAMP)  ## benchmarks; figures are appended to bench/RESULTS.md
	python bench/ingest.py

clean-demo:
	rm -rf $(DEMO)
