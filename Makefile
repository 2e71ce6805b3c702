# Two commands set everything up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-unit test-broker test-postgres bench layers soak clean

# The venv, with the project editable and its dev tools; `payments` (devtools/cli.py: run, bench, layers, soak) is a
# dev command, so it is put in the venv here rather than declared in pyproject.toml, which the image installs.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	printf '#!/bin/sh\nexec "$$(dirname "$$0")/python" -m devtools.cli "$$@"\n' > $(BIN)/payments
	chmod +x $(BIN)/payments
	touch $(STAMP)

## run: the local Kafka broker (unless BROKER_URL is set) and one worker answering on 127.0.0.1:6066;
## `make run BROKERS=3`: three Kafka nodes (the first at the same port), every topic on all three
BROKERS ?= 1
run: $(STAMP)
	$(BIN)/payments run --brokers $(BROKERS)

# The live page's test (tests/integration/test_live_page.py) drives Debian's Chromium headless through its
# chromedriver; installed once, when chromedriver is missing (as root, or through sudo).
CHROMEDRIVER := /usr/bin/chromedriver
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

$(CHROMEDRIVER):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver

# The benchmark's HTTP clients (bench/http_load.py) are Debian's wrk; installed the same way, once.
WRK := /usr/bin/wrk

$(WRK):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends wrk

## test: lint, the import contracts (pyproject.toml), then every test, including those against a real local broker
test: $(STAMP) $(CHROMEDRIVER) $(WRK)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest

test-unit: $(STAMP)
	$(BIN)/pytest -m "not broker and not postgres"

test-broker: $(STAMP) $(CHROMEDRIVER) $(WRK)
	$(BIN)/pytest -m broker

test-postgres: $(STAMP)
	$(BIN)/pytest -m postgres

## bench: the benchmark matrix (see BENCHMARKS.md); results in bench/results/latest.*, then the Concurrent model with
## 2 workers at full speed again (bench/results/full-speed/) and at half of that at once (latency without a queue;
## bench/results/half-load/): the machine's speed drifts too much over the matrix's 45 minutes to use its figure
bench: $(STAMP) $(WRK)
	$(BIN)/payments bench
	$(BIN)/payments bench --model concurrent --workload uniform hot-payer --workers 2 --path kafka \
		--results-dir bench/results/full-speed
	$(BIN)/payments bench --model concurrent --workload uniform hot-payer --workers 2 --path kafka \
		--half-of bench/results/full-speed/latest.json --results-dir bench/results/half-load

## layers: each layer of a ledger agent alone (rules, codec, RocksDB, Kafka client); bench/results/layers.*
layers: $(STAMP)
	$(BIN)/payments layers

## soak: 1,000,000 transfers of history, restart and takeover times, 20 SIGKILLs, a broker restart and 20
## leave/join cycles under load, then the invariants; then on three Kafka nodes: a leader SIGKILLed, a node paused,
## two nodes down, a worker and a node together (see RELIABILITY.md); bench/results/soak.*, soak-replicated.*
soak: $(STAMP)
	$(BIN)/payments soak

clean:
	rm -rf .data bench/scratch

## lock: image/requirements.lock, what the image installs (Dockerfile): the runtime dependencies and the build
## backend, pinned at the versions installed in .venv (those the tests ran), with the hash of every file published
.PHONY: lock
lock: $(STAMP)
	$(BIN)/pip freeze --exclude-editable > $(VENV)/pip-freeze.txt
	$(BIN)/python -c "import tomllib; print(*tomllib.load(open('pyproject.toml', 'rb'))['build-system']['requires'], sep='\n')" \
	  | $(BIN)/uv pip compile pyproject.toml - --constraint $(VENV)/pip-freeze.txt --generate-hashes \
	      --python-version 3.11 --python-platform linux --custom-compile-command "make lock" -o image/requirements.lock
