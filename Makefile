# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# `make demo` is the whole pipeline through the Airflow DAGs (python -m jobs.pipeline; its Airflow home and SQLite
# database are created under .airflow/ on first use).
# They create .venv from requirements/lock.txt, resolve the Delta Lake JVM package into .cache/ivy and build the
# Spark driver's class archive into .cache/cds when any is missing or out of date.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
UV_VERSION := 0.13.8
TORCHREC_VERSION := 1.8.0
VENV_STAMP := $(VENV)/.installed
DELTA_STAMP := .cache/ivy/.resolved
CDS_STAMP := .cache/cds/.built
DEMO_LAKEHOUSE ?= lakehouse
PRESET ?= small
MODELS ?=
AIRFLOW_HOME_DIR ?= .airflow
PYTEST_ARGS ?=

.PHONY: setup demo test lint lock cuda bundle benchmark-generator clean

setup: $(VENV_STAMP) $(DELTA_STAMP) $(CDS_STAMP)

$(VENV_STAMP): requirements/lock.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	$(UV) pip install --python $(PY) -r requirements/lock.txt
	# torchrec without its declared fbgemm-gpu (the CUDA build); fbgemm-gpu-cpu comes from the lock
	$(UV) pip install --python $(PY) --no-deps torchrec==$(TORCHREC_VERSION)
	$(UV) pip install --python $(PY) --no-deps -e .
	touch $@

$(DELTA_STAMP): $(VENV_STAMP) features/spark.py
	$(PY) -m features.spark --resolve-delta
	touch $@

# The driver JVM's class archive (jobs/class_archive.py): remade whenever the environment or the jars change, since
# a JVM runs without an archive made for other jars (a warning, and the start-up gain is lost).
$(CDS_STAMP): $(DELTA_STAMP) features/spark.py jobs/class_archive.py
	$(PY) -m jobs.class_archive --force
	touch $@

demo: setup
	$(PY) -m jobs.pipeline --lakehouse $(DEMO_LAKEHOUSE) --preset $(PRESET) --airflow-home $(AIRFLOW_HOME_DIR) \
		$(if $(MODELS),--models $(MODELS))

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check features jobs training tests benchmarks airflow_dags

# Re-resolve the full pinned set from requirements/base.in (needs network; commit the result).
lock: $(VENV_STAMP)
	$(UV) pip compile --python-version 3.11 requirements/base.in -o requirements/lock.txt

# On a machine with an NVIDIA GPU: the same torch wheel is CUDA-enabled; swap the CPU fbgemm for the GPU one.
cuda: setup
	$(UV) pip uninstall --python $(PY) fbgemm-gpu-cpu
	$(UV) pip install --python $(PY) --no-deps fbgemm-gpu==$(TORCHREC_VERSION)

# The job bundle for spark-submit on a cluster whose executors lack the project: dist/ctr_suite_jobs.zip for
# --py-files and dist/submit/<job>.py; prints the submit command of each job.
bundle: $(VENV_STAMP)
	$(PY) -m jobs.bundle --out dist

benchmark-generator: setup
	$(PY) -m benchmarks.generate_synthetic

clean:
	rm -rf $(VENV) .cache $(DEMO_LAKEHOUSE) $(AIRFLOW_HOME_DIR)
