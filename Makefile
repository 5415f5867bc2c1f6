# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install interprettensor (TensorFlow CPU build), run the demo
#   make test   - create .venv, install interprettensor with test extras, keras_hub, mkdocs, JAX and PyTorch,
#                 run the test suite
#   make docs   - create .venv, install the docs extra, build the documentation site into site/
PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= cpu,test,analysis
BIN    := $(VENV)/bin
# PyTorch for the backend tests: the 2.13 series resolves to its CPU build on this project's machines
# (set TORCH=torch for the newest release, which on PyPI is the CUDA build)
TORCH  ?= torch==2.13.*

.PHONY: setup demo test docs bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# the tests also explain keras_hub's transformers (the optional [hub] extra), build the
# documentation site (the [docs] extra: tests/test_docs.py runs mkdocs build --strict) and run the
# engine on Keras' JAX and PyTorch backends (the [jax] and [torch] extras)
$(BIN)/.installed-hub: $(BIN)/.installed pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),hub,docs,jax,torch]" "$(TORCH)"
	touch $@

# the documentation site (mkdocs, Material, mkdocstrings)
$(BIN)/.installed-docs: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),docs]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/interprettensor demo --out output/demo

test: $(BIN)/.installed-hub
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup --durations=25

docs: $(BIN)/.installed-docs
	$(BIN)/mkdocs build --strict --site-dir site

bench: setup
	$(BIN)/python benchmarks/bench_lrp.py

clean:
	rm -rf $(VENV) output site
