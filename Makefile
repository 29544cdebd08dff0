# The README's two commands: `make serve` and `make test`. Both set everything up first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
REPO   ?= demo-repo
HOST   ?= 127.0.0.1
PORT   ?= 8000
TENANTS ?= 3

.PHONY: serve test lint typecheck unit bench-peers clean grpc-proto nginx

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
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/ruff check src tests benchmarks

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy src

test: lint typecheck nginx
	$(BIN)/pytest

# nginx for `modelfleet cluster` and its tests, from the Debian packages when it is missing and apt-get
# may run (as root, or through sudo without a password). Never fails: without it the nginx tests
# skip and say why.
APT_NGINX := DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx
nginx:
	@if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
	  echo "nginx: not installed and no apt-get here: the nginx tests will skip"; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then SUDO=; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; \
	else echo "nginx: not installed, and apt-get needs root (no password-less sudo): the nginx tests will skip"; exit 0; fi; \
	$$SUDO env $(APT_NGINX) >/dev/null 2>&1 || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO env $(APT_NGINX) >/dev/null 2>&1; } \
	  || echo "nginx: apt-get install nginx failed: the nginx tests will skip"

unit: $(VENV)/.test-deps
	$(BIN)/pytest tests/unit -q

# Regenerate the protobuf modules after editing src/modelfleet/protocol/grpc/*.proto (committed).
grpc-proto: $(VENV)/.test-deps
	$(BIN)/python -m grpc_tools.protoc -Isrc --python_out=src --pyi_out=src src/modelfleet/protocol/grpc/*.proto

clean:
	rm -rf $(VENV) $(REPO) .mypy_cache .ruff_cache .pytest_cache
