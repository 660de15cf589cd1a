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

PORT ?= 5000
UI_PORT ?= 8000
DEMO_STORE = sqlite:///$(abspath $(DEMO))/mlflow.db

.PHONY: help install demo test test-fast lint docs format data repro bench serve ui mlflow-ui clean-demo team-up team-down image image-gpu image-serve kfp
.DEFAULT_GOAL := help

help:  ## list the targets (this text)
	@echo "make <target>   (the front door: make demo, make test)"
	@awk -F':.*## ' '/^[a-z-]+:.*## / {printf "  %-11s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	# uv installs the same pinned set as pip in ~22 s instead of ~95 s; pip is the fall-back.
	# --compile-bytecode as pip does: without .pyc files (and with PYTHONDONTWRITEBYTECODE set)
	# every process would spend ~6 s more importing TensorFlow.
	( $(BIN)/pip install -q 'uv==0.13.9' && $(BIN)/uv pip install -q --compile-bytecode --python $(BIN)/python -e '.[train,cpu,dev,team]' ) \
	  || $(BIN)/pip install -q -e '.[train,cpu,dev,team]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)  ## create .venv and install the package with its pinned dependencies

demo: $(STAMP)  ## run the whole pipeline on the embedded synthetic data at demo size, in $(DEMO)
	mura workspace $(DEMO) --override params.demo.yaml --synth
	cd $(DEMO) && MURA_GIT_COMMIT=$$(git -C $(CURDIR) rev-parse HEAD 2>/dev/null || echo unknown) dvc repro
	@echo; echo "SYNTHETIC demo finished in $(DEMO) (not patient data). Report: $(DEMO)/reports/README.md"
	@echo "Next: make serve (REST model server), make ui (web interface), make mlflow-ui (compare runs)."

serve: $(STAMP)  ## serve the demo's registered ensemble on 127.0.0.1:$(PORT): MLflow's scoring server + /metrics
	cd $(DEMO) && MLFLOW_TRACKING_URI=$(DEMO_STORE) mura serve-model -m models:/mura-ensemble/1 -H 127.0.0.1 -p $(PORT)

ui: $(STAMP)  ## web interface on the demo's champion model, http://127.0.0.1:$(UI_PORT)
	MLFLOW_TRACKING_URI=$(DEMO_STORE) mura serve-ui --model models:/mura-ensemble@champion --port $(UI_PORT)

mlflow-ui: $(STAMP)  ## MLflow UI on the demo's tracking store; prints the runs table's address (port 5001)
	cd $(DEMO) && mura mlflow-ui --tracking-uri $(DEMO_STORE) --port 5001

test: lint  ## lint, then the whole test suite (installs Chromium and PostgreSQL from Debian if missing)
	scripts/ensure-system.sh
	pytest -q --durations=25   # the slowest tests, in every CI log

lint: $(STAMP)  ## ruff, vulture (dead code), mypy on src/ and tests/, hadolint, mkdocs build --strict
	ruff check src stages tests bench pipelines docs
	ruff format --check src stages tests bench pipelines docs
	vulture src stages bench pipelines scripts/vulture_allowlist.py --min-confidence 60
	mypy src tests
	hadolint docker/Dockerfile
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict --quiet   # the docs: no broken link or anchor

docs: $(STAMP)  ## build the documentation site into build/site (mkdocs serve: preview on 127.0.0.1:8000)
	NO_MKDOCS_2_WARNING=1 mkdocs build --strict

format: $(STAMP)  ## apply ruff's fixes and formatting
	ruff check --fix src stages tests bench pipelines docs
	ruff format src stages tests bench pipelines docs

test-fast: $(STAMP)  ## the tests not marked slow (unit tests without long trainings; about a minute)
	pytest -q -m "not slow"

data: $(STAMP)  ## write the synthetic datasets at the params.yaml size into data/raw/synthetic
	mura synth data/raw/synthetic
	dvc add -q data/raw/synthetic   # tracked, so `dvc push -r team` carries it and a clone pulls it

repro: $(STAMP)  ## dvc repro in the repository (real or synthetic data per params.yaml)
	dvc repro

bench: $(STAMP)  ## benchmarks; figures are appended to bench/RESULTS.md
	python bench/ingest.py
	python bench/train_throughput.py
	python bench/feed_throughput.py
	python bench/serve_latency.py
	python bench/web_load.py
	python bench/dicom_node.py
	python bench/audit_cost.py
	python bench/install_size.py --images

IMAGE ?= localhost/mura
ENGINE ?= podman

image:  ## build the CPU image localhost/mura:cpu with podman (docker/Dockerfile; ENGINE=docker works too)
	docker/setup-podman.sh && docker/make-base.sh
	$(ENGINE) build -f docker/Dockerfile --target cpu -t $(IMAGE):cpu .

image-gpu:  ## build the GPU image localhost/mura:gpu (TensorFlow's CUDA build)
	docker/setup-podman.sh && docker/make-base.sh
	$(ENGINE) build -f docker/Dockerfile --target gpu -t $(IMAGE):gpu .

image-serve:  ## build the serving image localhost/mura:serve (model server, web UI, DICOM node; no TensorFlow)
	docker/setup-podman.sh && docker/make-base.sh
	$(ENGINE) build -f docker/Dockerfile --target serve -t $(IMAGE):serve .

kfp: $(STAMP)  ## compile the Kubeflow pipeline (pipelines/kubeflow.py) to pipelines/mura.yaml
	python pipelines/kubeflow.py --output pipelines/mura.yaml

team-up: $(STAMP)  ## start PostgreSQL + S3 + MLflow server (auth) on 127.0.0.1; settings in .team.env
	mura team up --state .team --env-file .team.env

team-down: $(STAMP)  ## stop the team stack (PURGE=1 also deletes its data)
	mura team down --state .team $(if $(PURGE),--purge,)

clean-demo:  ## delete the demo workspace
	rm -rf $(DEMO)
