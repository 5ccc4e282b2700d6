# gradlab's front door. `make help` lists the targets; variables are set as `make sweep SWEEP=seeds JOBS=2`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
# A GPU user may pick another build: make install TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.gradlab-installed
ARGS ?=
SWEEP ?= lr_scale_optimizer
JOBS ?= 1
EXPERIMENT ?=
PORT ?= 5000
# The store the UI shows: STORE=..., else MLFLOW_TRACKING_URI (as every other command reads it), else mlruns/.
STORE ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlruns/mlflow.db)
BENCH_OUT ?= bench-results/bench.json
# make test's pytest workers: most slow tests wait on a subprocess; more than the cores loads the fault tests past their timing
TEST_WORKERS ?= 2
# make cluster: its state (config, logs, database, artifacts, pid files) under one folder
CLUSTER_DIR ?= $(CURDIR)/.cluster

.DEFAULT_GOAL := help
.PHONY: help install browser train sweep compare ui reap test test-fast bench screenshots clean cluster cluster-down

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: $(STAMP) ## create .venv, install pinned torch and gradlab (editable); idempotent

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@# gradlab's own sweeper replaced hydra-optuna-sweeper (it pinned Optuna 2): an older .venv loses it
	@$(BIN)/python -m pip uninstall --quiet --yes hydra-optuna-sweeper 2>/dev/null || true
	@touch $@

browser: ## Debian's Chromium, for the dashboard tests and `make screenshots` (apt-get, as root); says what is skipped without it
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$GRADLAB_CHROMIUM" ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null; \
	  else echo "make: no Chromium here: the dashboard tests will be skipped (as root: make browser; else: sudo apt-get install chromium)"; fi; }

train: $(STAMP) ## one run of the default experiment into mlruns/ (ARGS="optimizer=adam optimizer.lr=0.1")
	$(BIN)/gradlab $(ARGS)

sweep: $(STAMP) ## run sweeps/SWEEP.yaml (default lr_scale_optimizer): compatible jobs trained as one batch, a child run per job; JOBS=2: a process per job
	$(BIN)/gradlab -m -cd sweeps -cn $(SWEEP) $(if $(filter-out 1,$(JOBS)),hydra/launcher=joblib hydra.launcher.n_jobs=$(JOBS)) $(ARGS)

compare: $(STAMP) ## comparison report of a sweep (EXPERIMENT=name; default: the latest sweep)
	$(BIN)/gradlab-compare $(if $(EXPERIMENT),--experiment $(EXPERIMENT)) $(ARGS)

reap: $(STAMP) ## mark runs whose process died hard (kill -9, power loss) as KILLED
	$(BIN)/gradlab reap

test: $(STAMP) browser ## the whole test suite, slow tier included (what .ci/run calls); installs Chromium for the browser tests
	@[ "$$(id -u)" = 0 ] || echo "make: not root: the cluster tests (tests/test_cluster.py: make cluster, as root) will be skipped"
	$(BIN)/python -m pytest -m "slow or not slow" -n $(TEST_WORKERS) --dist loadgroup --ignore tests/test_cluster.py $(PYTEST_ARGS)
	@# alone, after: the cluster's tracking server went down mid-test beside the workers' load
	$(BIN)/python -m pytest -m "slow or not slow" tests/test_cluster.py $(PYTEST_ARGS)

test-fast: $(STAMP) ## the fast tier only
	$(BIN)/python -m pytest $(PYTEST_ARGS)

ui: $(STAMP) ## the MLflow UI on the store (MLFLOW_TRACKING_URI, else mlruns/), on 127.0.0.1 only (PORT=5000)
	@# gradlab opens (or creates) the store first, under its creation lock, prints the runs views' URLs
	@# (a fresh browser would open an experiment on MLflow's GenAI page), then serves the UI.
	MLFLOW_TRACKING_URI="$(STORE)" $(BIN)/gradlab ui --port $(PORT)

bench: $(STAMP) ## the benchmark, ratios measured side by side (~10 min; BENCH_ARGS=--quick for a smoke run)
	BENCH_OUT=$(BENCH_OUT) $(BIN)/python -m gradlab.bench $(BENCH_ARGS)

screenshots: $(STAMP) browser ## the README's UI pictures: the headline sweep in headless Chromium
	$(BIN)/python docs/dashboard.py --out docs

cluster: ## a one-node Slurm cluster + PostgreSQL-backed mlflow server on 127.0.0.1 (as root; state in CLUSTER_DIR); prints the exports to use
	@CLUSTER_DIR="$(CLUSTER_DIR)" CLUSTER_PYTHON="$(abspath $(BIN))/python" bash cluster/up.sh

cluster-down: ## stop what make cluster started (its pid files), nothing else; the state stays
	@CLUSTER_DIR="$(CLUSTER_DIR)" bash cluster/down.sh

clean: ## remove the virtual environment (the store in mlruns/ is kept)
	rm -rf $(VENV)
