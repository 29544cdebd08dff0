# The README's two commands: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= demo-repo
HOST   ?= 127.0.0.1
PORT   ?= 8000
TENANTS ?= 3

.PHONY: serve test lint typecheck unit bench-peers clean grpc-proto

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: 2.13.0 is the CPU build (an unpinned torch pulls several GB of CUDA build)
$(VENV)/.serve-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[demo,grpc,monitor]'
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[demo,grpc,monitor,plan,compile,test]'
	touch $@ $(VENV)/.serve-deps

$(REPO): | $(VENV)/.serve-deps
	$(BIN)/modelfleet demo-repo $(REPO) --tenants $(TENANTS)

serve: $(VENV)/.serve-deps $(REPO)
	@$(BIN)/python -m modelfleet.demo.banner --url http://$(HOST):$(PORT) --repo $(REPO)
	$(BIN)/modelfleet serve $(REPO) --host $(HOST) --port $(PORT) --python-models

lint: $(VENV)/.test-deps
	$(BIN)/ruff format --check src tests bench
	$(BIN)/ruff check src tests bench

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy src

test: lint typecheck
	$(BIN)/pytest

unit: $(VENV)/.test-deps
	$(BIN)/pytest tests/unit -q

# Regenerate the protobuf modules after editing src/modelfleet/protocol/grpc/*.proto (committed).
grpc-proto: $(VENV)/.test-deps
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/modelfleet/protocol/grpc/*.proto

clean:
	rm -rf $(VENV) $(REPO) .mypy_cache .ruff_cache .pytest_cache
