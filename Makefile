# Set-up and checks. `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/pip install -c constraints.txt

.PHONY: demo test lint typecheck pytest bench mxnet-fixtures keras-onnx-fixtures clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, pinned, so that pip never picks a CUDA build.
$(VENV)/.torch: $(BIN)/python constraints.txt
	$(PIP) torch==2.13.0
	touch $@

$(VENV)/.runtime: $(VENV)/.torch pyproject.toml setup.py
	$(PIP) -e .
	touch $@

$(VENV)/.dev: $(VENV)/.runtime
	$(PIP) -e ".[dev,plot]"
	touch $@

demo: $(VENV)/.runtime
	$(BIN)/python -m repurpose demo

lint: $(VENV)/.dev
	$(BIN)/ruff check repurpose tests examples benchmarks tools

typecheck: $(VENV)/.dev
	$(BIN)/mypy repurpose

pytest: $(VENV)/.dev
	$(BIN)/python -m pytest -q -p no:cacheprovider

test: lint typecheck pytest

bench: $(VENV)/.dev
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Reference MXNet run in its own environment; only needed to regenerate committed fixtures.
MXVENV := .venv-mxnet
$(MXVENV)/bin/python:
	$(PYTHON) -m venv $(MXVENV)
	$(MXVENV)/bin/pip install "numpy==1.23.5" "mxnet==1.9.1" "gluoncv==0.10.5.post0"

mxnet-fixtures: $(MXVENV)/bin/python
	$(MXVENV)/bin/python tools/make_mxnet_fixtures.py --out tests/mxnet/fixtures

clean:
	rm -rf $(VENV) build *.egg-info

# Keras-origin ONNX fixtures: real Keras applications exported by tf2onnx and by Keras 3's
# own Model.export, in their own environment; only needed to regenerate committed fixtures.
TFVENV := .venv-tf
$(TFVENV)/bin/python:
	$(PYTHON) -m venv $(TFVENV)
	$(TFVENV)/bin/pip install "tensorflow-cpu==2.20.0" "tf2onnx==1.17.0"

keras-onnx-fixtures: $(TFVENV)/bin/python
	$(TFVENV)/bin/python tools/make_keras_onnx_fixtures.py --out tests/onnx/fixtures
