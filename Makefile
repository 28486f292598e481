# The two commands of the README: `make run` (set up, generate, render, demo) and
# `make test` (the whole suite under both state-machine backends). Both create and use
# .venv; neither needs anything installed by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# Debian packages: `dot` renders the diagrams; nanocat and nngcat are the interop peers;
# `ip` (iproute2) makes the network namespaces of the partition tests.
DEBS   := graphviz nanomsg-utils nng-utils iproute2

.PHONY: all run test test-deep test-fast regen check-regen diagrams lint bench bench-quick soak system-deps venv clean

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Install the Debian packages when one is missing and this machine allows it (root with
# apt-get); otherwise say what is missing: the interop tests then skip locally (never in CI,
# where CI=true turns a missing peer into a failure).
system-deps:
	@missing=""; \
	command -v dot >/dev/null || missing="$$missing graphviz"; \
	command -v nanocat >/dev/null || missing="$$missing nanomsg-utils"; \
	command -v nngcat >/dev/null || missing="$$missing nng-utils"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "warning: missing Debian packages:$$missing (install them for diagrams and interop tests)"; \
	  fi; \
	fi

regen: venv system-deps
	$(BIN)/python -m codegen

diagrams: regen

check-regen: venv system-deps
	$(BIN)/python -m codegen --check

# Everything with the compiled backend, then everything that runs a machine with the
# transitions backend (the codegen, reactor and transport tests run no machine).
BACKEND_TESTS := tests/protocols tests/core tests/integration tests/interop tests/models tests/fuzz tests/cli \
                 tests/models_sockets tests/test_conformance.py tests/test_docs.py

# Then the real-socket tests once more in a process pinned to one core: there every thread
# that sleeps on a channel sleeps on a descriptor of its own and is woken once its waker's
# section ends (src/scaproust/reactor/waker.py), a path the run on two cores takes only
# where a test forces it.
test: venv system-deps check-regen
	SCAPROUST_FSM=compiled $(BIN)/python -m pytest
	SCAPROUST_FSM=transitions $(BIN)/python -m pytest -p no:cacheprovider $(BACKEND_TESTS)
	taskset -c 0 $(BIN)/python -m pytest -q -p no:cacheprovider tests/integration

# The property-based models with many more examples and steps (tens of minutes), then the
# real-socket tests with the garbage collector firing every hundred allocations.
test-deep: venv
	HYPOTHESIS_PROFILE=deep SCAPROUST_TEST_TIMEOUT=0 $(BIN)/python -m pytest tests/models tests/models_sockets
	SCAPROUST_GC_STRESS=1 $(BIN)/python -m pytest -q tests/integration tests/models_sockets
	SCAPROUST_GC_STRESS=1 SCAPROUST_FSM=transitions $(BIN)/python -m pytest -q tests/integration tests/models_sockets

test-fast: venv
	$(BIN)/python -m pytest -x -q --ignore=tests/interop

run: venv system-deps regen
	$(BIN)/python -m scaproust demo

# ruff, then mypy --strict on all of src/scaproust (the generated machines included) and
# codegen/: pyproject.toml's [tool.mypy] `files`.
lint: venv
	$(BIN)/ruff check src codegen tests bench tools examples
	$(BIN)/mypy

# The soak (issue 10; docs/RELIABILITY.md): every protocol over tcp, ipc and
# inproc for SOAK_SECONDS, peers joining, closing and killed, every message accounted for,
# resources flat; one summary line, non-zero naming the failed check. A 5 s run is part of
# `make test` (tests/soak/test_soak.py). SOAK_ARGS: e.g. "--verbose --seed 7".
SOAK_SECONDS ?= 60
soak: venv
	$(BIN)/python tools/soak.py --seconds $(SOAK_SECONDS) $(SOAK_ARGS)

# Side by side with pynng, pyzmq and a bare-socket ceiling (issue 8; bench/run.py says how),
# then docs/PERFORMANCE.md and docs/performance.png from the new bench/results/<date>.json.
# The report is written even when a case failed; the exit status is then the bench's.
bench: venv
	$(BIN)/python bench/run.py; rc=$$?; $(BIN)/python bench/report.py && exit $$rc

# About a minute: the 64 B TCP round trips, 64 B and 1 MiB TCP throughput, 1,000 idle pipes;
# writes bench/results/<date>-quick.json and leaves docs/PERFORMANCE.md alone.
bench-quick: venv
	$(BIN)/python bench/run.py --quick

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache src/*.egg-info

# Mutation testing (issue 5, "Test power"): mutants of protocols.yaml and of the hand-written
# actions, each run against the fast tests in a temporary copy of the tree; the report goes
# to build/mutation-report.md (tools/mutate/, `python -m tools.mutate --help`). Options:
# make mutate MUTATE_ARGS="--only yaml --machine req".
.PHONY: mutate
mutate: venv
	$(BIN)/python -m tools.mutate $(MUTATE_ARGS)
