# make run   — set up .venv if needed, then run the quickstart matrix (or CONFIG=path.toml)
# make test  — set up .venv if needed, then run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparsebench-installed
# CPU build of torch, installed before anything that depends on torch (no multi-GB CUDA pull).
TORCH  ?= torch==2.13.0
CONFIG ?=

.PHONY: run test bench doctor clean

$(STAMP): pyproject.toml setup.py $(wildcard accelerators/_csrc/*.c accelerators/_csrc/*.h)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e '.[test,peers,ray]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sparsebench run $(CONFIG)

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) scripts/bench_kernels.py

doctor: $(STAMP)
	$(VENV)/bin/sparsebench doctor

clean:
	rm -rf build *.egg-info accelerators/*.so
