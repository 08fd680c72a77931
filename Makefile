# make run   — set up .venv if needed, then run the quickstart matrix (or CONFIG=path.toml)
# make test  — set up .venv if needed, then run the test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.sparsebench-installed
# torch first, before anything that depends on it, so pip does not pick a build of its own;
# TORCH_INDEX=https://download.pytorch.org/whl/cpu takes the CPU build where the default index
# serves the multi-GB CUDA one.
TORCH  ?= torch==2.13.0
TORCH_INDEX ?=
CONFIG ?=

.PHONY: run test bench doctor clean

$(STAMP): pyproject.toml setup.py $(wildcard accelerators/_csrc/*.c accelerators/_csrc/*.h)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
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
