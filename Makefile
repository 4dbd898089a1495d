PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run cluster test bench ui clean

WORKERS ?= 2

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job: the built-in NIR regression sweep, through Dagster, into ./workspace
run: $(STAMP)
	$(BIN)/python -m n4a_dagster run-sweep --workspace ./workspace

# The scale-out deployment on this machine: RabbitMQ + PostgreSQL (Dagster instance and
# n4a catalog, both fresh), $(WORKERS) celery workers, the built-in sweep through them
cluster: $(STAMP)
	$(BIN)/python -m n4a_dagster cluster --workers $(WORKERS) --dir ./cluster

# The Dagster UI on the same workspace (http://127.0.0.1:3000)
ui: $(STAMP)
	DAGSTER_HOME=$(CURDIR)/.dagster_home N4A_WORKSPACE=$(CURDIR)/workspace $(BIN)/dagster dev -w workspace.yaml

# the suite in TEST_WORKERS processes (pytest-xdist), each test file on one worker
TEST_WORKERS ?= 2

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile tests

bench: $(STAMP)
	$(BIN)/python benchmarks/sweep_ingest.py
	$(BIN)/python benchmarks/replay.py
	$(BIN)/python benchmarks/sweep_overhead.py
	$(BIN)/python benchmarks/dagster_sweep.py
	$(BIN)/python benchmarks/backends.py
	$(BIN)/python benchmarks/scale_out.py

clean:
	rm -rf $(VENV) workspace .dagster_home cluster
