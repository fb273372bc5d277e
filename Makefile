# sobert — two commands on a fresh Debian machine with Python 3.11:
#   make run    the embedded end-to-end smoke run (prepare -> pretrain on CPU -> convert -> finetune)
#   make test   everything, including starting the test servers
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The four distributions (docs/architecture.md), installed editable; the trainer with Ray Train.
PACKAGES := api operator trainer testbed
SOURCES := $(PACKAGES:=/src) tests scripts
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml $(PACKAGES:=/pyproject.toml) constraints.txt | sha256sum | cut -c1-12)

# make run reads the real StackOverflow sample when ../shared is beside the checkout, else the
# project's own hand-written fixture dump.
SHARED_POSTS := ../shared/data/stackoverflow_posts
ifneq ($(wildcard $(SHARED_POSTS)/stackoverflow.com-Posts.sample.xml),)
RUN_POSTS ?= $(SHARED_POSTS)/stackoverflow.com-Posts.sample.xml $(SHARED_POSTS)/beer.stackexchange.com-Posts.xml
RUN_COMMENTS ?= $(SHARED_POSTS)/stackoverflow.com-Comments.sample.xml
else
RUN_POSTS ?= tests/fixtures/dump/example.stackexchange.com-Posts.xml
RUN_COMMENTS ?= tests/fixtures/dump/example.stackexchange.com-Comments.xml
endif
# Finetune tasks: the real training samples of ../shared/data when present. Obsoletion uses the
# project's own hand-labelled CSV: no comment in the shared sample is on an answer it contains,
# so weak labels from it would be empty.
SHARED_DATA := ../shared/data
OBSOLETION_CSV := tests/fixtures/finetune/obsoletion-labelled.csv
ifneq ($(wildcard $(SHARED_DATA)/ner/train.txt),)
RUN_FINETUNE ?= --finetune quality=$(SHARED_DATA)/question_quality/processed_valid_sample.jsonl \
	--finetune closed=$(SHARED_DATA)/closed_questions/sample_2000.csv \
	--finetune ner=$(SHARED_DATA)/ner/train.txt,$(SHARED_DATA)/ner/dev.txt \
	--finetune obsoletion=$(OBSOLETION_CSV)
else
RUN_FINETUNE ?= --finetune obsoletion=$(OBSOLETION_CSV)
endif
RUN_NAME ?= smoke
RUN_STORAGE ?= .sobert
RUN_PROCS ?= 2
PYTEST_ARGS ?=

generate: setup  ## Regenerate the SobertRun CRD (chart crds/ and kustomize base) from the RunSpec model
	for f in charts/sobert/crds/sobertruns.sobert.dev.yaml manifests/base/crds/sobertruns.sobert.dev.yaml; do \
		$(BIN)/python -m sobert_api.crd > $$f.tmp && mv $$f.tmp $$f; done

.PHONY: help setup generate run test test-unit test-integration lint format typecheck images dev-cluster dev-cluster-down bench bench-gpu clean clean-run all

help:  ## Show the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: $(STAMP)  ## Create .venv with pinned dependencies (torch CPU build pinned via constraints.txt)

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e ./api -e ./operator -e "./trainer[finetune]" -e ./testbed --group dev
	rm -f $(VENV)/.installed-* && touch $@

run: setup  ## Embedded end-to-end run of the tiny preset on CPU, ending with the finetunes (resumes if interrupted)
	$(BIN)/sobertctl submit tiny --name $(RUN_NAME) --storage $(RUN_STORAGE) \
		--posts $(RUN_POSTS) --comments $(RUN_COMMENTS) --procs-per-node $(RUN_PROCS) $(RUN_FINETUNE)

test: setup  ## All tests: unit and integration (its own S3 server, Kubernetes built with Go, helm, Chromium, torchrun, Ray)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-unit: setup  ## Unit tests only (no servers, no subprocesses)
	$(BIN)/python -m pytest -m "not integration and not gpu" $(PYTEST_ARGS)

test-integration: setup  ## Integration tests only
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

lint: setup  ## Check style (ruff) and the packages' layering (import-linter) without changing files
	$(BIN)/ruff check $(SOURCES)
	$(BIN)/ruff format --check $(SOURCES)
	$(BIN)/lint-imports

format: setup  ## Fix what ruff can fix
	$(BIN)/ruff check --fix $(SOURCES)
	$(BIN)/ruff format $(SOURCES)

typecheck: setup  ## mypy over the packages
	$(BIN)/mypy $(PACKAGES:=/src)

images: setup  ## Build the controller and trainer images into the local buildah store, as the tests do
	$(BIN)/python scripts/build_images.py

dev-cluster: setup images  ## Start the cluster tier (Kubernetes, the operators, process kubelets, S3) in the background; prints its kubeconfig
	$(BIN)/python -m sobert_testbed up --workdir .dev-cluster \
	  --pytorch-init-container-template manifests/training-operator/pytorch-init-container.yaml

dev-cluster-down:  ## Stop what make dev-cluster started
	$(BIN)/python -m sobert_testbed down --workdir .dev-cluster

bench: setup  ## Benchmarks; results written to BENCHMARKS.md
	$(BIN)/python scripts/bench.py --out BENCHMARKS.md

# No `setup`: a CUDA machine lent for a measurement may have no network. Without .venv it uses
# python3 and the wheels carried in .whl/ (docs/pretraining.md, "Measuring on a GPU").
BENCH_GPU_ARGS ?=
bench-gpu:  ## On a CUDA machine: tiny/base/large pretraining, SDPA probe, step profile -> BENCHMARKS.md; results in OUT (build/bench-gpu)
	bash scripts/bench_gpu.sh $(BENCH_GPU_ARGS)

all: lint test  ## lint + test

clean-run:  ## Delete the smoke run's storage (the next make run starts over)
	rm -rf $(RUN_STORAGE)

clean: clean-run  ## Delete the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
