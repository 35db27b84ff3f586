# The two entry points of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck unit test-deps proto vendor-js bench bench-quick soak churn autobahn clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

## run: install and start the server on http://127.0.0.1:8000 (memory engine, development mode)
run: $(STAMP)
	$(BIN)/hubbub serve --dev

# The markers of the tests that need more than Python, or take long (docs/developing.md).
OUTSIDE := redis or nats or postgres or browser or tmux or js or slow
# The suite's total coverage when the floor was set (87.0%), less a point for the branches a
# run may or may not take (retries, timing); `make test` fails below it. Raise it as coverage
# grows.
COVERAGE_FLOOR := 86

## test: install everything the tests need, then lint, type check and run the whole suite
test: $(STAMP) test-deps lint typecheck
	$(BIN)/python -m pytest -q -p no:cacheprovider --cov=hubbub --cov-report=term:skip-covered \
		--cov-fail-under=$(COVERAGE_FLOOR)

## unit: the inner loop: the tests that need no outside service and are quick (no lint, no coverage)
unit: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not ($(OUTSIDE))"

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

test-deps:
	bash scripts/test-deps.sh

## bench: the benchmark suite, hubbub next to Bun, python-socketio and the FastAPI tutorial manager, then the chat-shaped load, the reconnect storms and two nodes on Redis (about 35 minutes; docs/benchmarks.md)
bench: $(STAMP)
	bash benchmarks/setup.sh
	$(BIN)/python benchmarks/suite.py
	$(BIN)/python benchmarks/chat_load.py
	$(BIN)/python benchmarks/storm.py
	$(BIN)/python benchmarks/topologies.py --bench

## bench-quick: a 2-minute subset of the suite (N = 100 and 1,000, 1,000 connections)
bench-quick: $(STAMP)
	bash benchmarks/setup.sh
	$(BIN)/python benchmarks/suite.py --quick

## soak: 10,000 connections under traffic for 2 minutes; RSS, descriptors and tasks must stay flat (docs/soak.md)
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py --connections 10000 --seconds 120

## churn: connect/subscribe/leave at full speed for a minute next to 1,000 steady connections; nothing left behind (docs/soak.md)
churn: $(STAMP)
	$(BIN)/python benchmarks/churn.py --seconds 60 --background 1000

## autobahn: the Autobahn|Testsuite cases 1-10 against hubbub serve, with the summary (docs/autobahn.md)
autobahn: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider -s tests/integration/test_autobahn.py

## proto: regenerate the Protobuf classes from src/hubbub/protocol/client.proto
proto: $(STAMP)
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/hubbub/protocol/client.proto

# The npm `centrifuge` SDK the chat page loads (src/hubbub/web/static/vendor/): the same version
# as tests/js/package-lock.json, so the page runs the client the Node tests run.
CENTRIFUGE_JS_VERSION := 5.8.0

## vendor-js: refresh the chat page's copy of the npm centrifuge SDK at CENTRIFUGE_JS_VERSION
vendor-js:
	bash scripts/vendor-js.sh $(CENTRIFUGE_JS_VERSION)

clean:
	rm -rf $(VENV) tests/js/node_modules
