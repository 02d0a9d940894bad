# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: install demo test e2e lint typecheck unit airflow bench lock contracts clean

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet -r requirements.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

## make demo: PostgreSQL + simulators + a seeded month + every DAG through real Airflow + report
demo: install
	$(BIN)/python -m psa_erp_sync.devenv.demo

## make test: lint, types, unit, integration (real PostgreSQL, simulators, Airflow)
test: install lint typecheck
	@rc=0; $(BIN)/pytest -p no:cacheprovider $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/python -m psa_erp_sync.devenv.pgserver stop --data .local/test-pg >/dev/null 2>&1 || true; \
	  exit $$rc

## make e2e: docker-compose.yaml's topology as processes (Celery workers, Redis, password auth), a
## seeded month through it, a worker SIGKILLed mid-posting (tests/e2e; needs redis-server)
e2e: install
	@rc=0; $(BIN)/pytest -p no:cacheprovider -m e2e tests/e2e -s $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/python -m psa_erp_sync.devenv.pgserver stop --data .local/e2e/pg >/dev/null 2>&1 || true; \
	  exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

## make airflow: a local Airflow (UI on :8080) wired to the simulators and the ODS
airflow: install
	$(BIN)/python -m psa_erp_sync.devenv.local_airflow

## make bench: performance figures as JSON
bench: install
	@$(BIN)/python -m psa_erp_sync.devenv.bench_all

## make contracts: re-export the canonical JSON Schemas after a deliberate model change
contracts: install
	$(BIN)/python -m psa_erp_sync.contracts.export

## make lock: re-resolve requirements.in into the pinned requirements.txt
lock: install
	$(BIN)/uv pip compile requirements.in --python-version 3.11 --no-header --annotation-style line -o requirements.txt

clean:
	-$(BIN)/python -m psa_erp_sync.devenv.pgserver stop --data .local/pg
	-$(BIN)/python -m psa_erp_sync.devenv.pgserver stop --data .local/test-pg
	rm -rf .local .mypy_cache .ruff_cache
