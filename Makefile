# Two commands do all the set-up on a fresh machine:
#   make demo   - create .venv, install interprettensor (TensorFlow CPU build), run the demo
#   make test   - create .venv, install interprettensor with test extras and keras_hub, run the test suite
PYTHON ?= python3
VENV   ?= .venv
EXTRAS ?= cpu,test,analysis
BIN    := $(VENV)/bin

.PHONY: setup demo test bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS)]"
	touch $@

# the tests also explain keras_hub's transformers (the optional [hub] extra)
$(BIN)/.installed-hub: $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e ".[$(EXTRAS),hub]"
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/interprettensor demo --out output/demo

test: $(BIN)/.installed-hub
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

bench: setup
	$(BIN)/python benchmarks/bench_lrp.py

clean:
	rm -rf $(VENV) output
