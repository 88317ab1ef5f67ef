# evalkit: the two commands a newcomer needs are `make quick` (set up + run the default protocol) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
SHARED ?= $(abspath ../shared)

# Point the mirrors at ../shared when it exists (the project's machines); a user's own environment variables win.
ifneq ($(wildcard $(SHARED)/weights),)
export EVALKIT_WEIGHTS_MIRROR ?= $(SHARED)/weights
export EVALKIT_DATA_MIRROR ?= $(SHARED)/data
export TORCH_HOME ?= $(SHARED)/weights/torch_home
export HF_HUB_OFFLINE ?= 1
endif

.PHONY: setup quick test lint system-deps clean

$(BIN)/evalkit: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]'
	touch $@

setup: $(BIN)/evalkit system-deps

# Debian packages the tests use: headless Chromium (browser tests), Slurm + munge (the one-node cluster of the Slurm
# executor's tests, scripts/slurm_cluster.sh). Installed only when missing and when we are root.
system-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v slurmctld >/dev/null 2>&1 || missing="$$missing slurm-wlm"; \
	command -v munged >/dev/null 2>&1 || missing="$$missing munge"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "note:$$missing not installed; browser and Slurm tests will be skipped"; fi; \
	fi

quick: setup
	$(BIN)/evalkit run --protocol quick --results results
	$(BIN)/evalkit leaderboard --results results

test: setup
	$(BIN)/python -m pytest -q

lint: $(BIN)/evalkit
	$(BIN)/ruff check evalkit methods tests scripts
	$(BIN)/ruff format --check evalkit methods tests scripts
	$(BIN)/mypy
	$(BIN)/python scripts/check_structure.py

clean:
	rm -rf $(VENV) results/*.sqlite* results/images results/export
