# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export AIRFLOW__CORE__LOAD_EXAMPLES := False

.PHONY: install demo test e2e lint typecheck unit airflow bench bench-peak bench-check bench-doc lock contracts deploy-check clean

# The development install: the dev lock (runtime lock + tools, hashes required), the package
# editable, and the checkout on sys.path for the development tooling (simulators/, devtools/),
# which the wheel and the image never contain.
$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(BIN)/python -m pip install --quiet --upgrade pip uv
	$(BIN)/uv pip install --python $(BIN)/python --quiet --require-hashes -r requirements-dev.txt
	$(BIN)/uv pip install --python $(BIN)/python --quiet --no-deps -e .
	@$(BIN)/python -c 'import sysconfig, pathlib; pathlib.Path(sysconfig.get_path("purelib"), "psa_erp_sync_devtools.pth").write_text("$(CURDIR)\n")'
	@touch $(STAMP)

install: $(STAMP)

## make demo: PostgreSQL + simulators + a seeded month + every DAG through real Airflow + report
demo: install
	$(BIN)/python -m devtools.demo

## make test: lint, types, unit, integration (real PostgreSQL, simulators, Airflow), on
## TEST_WORKERS pytest-xdist workers (default 2; each has its own database and Airflow home; whole
## files per worker, so a module's fixtures stay in one process). TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: install lint typecheck
	@rc=0; $(BIN)/pytest -p no:cacheprovider $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile) --durations=15 $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/python -m devtools.pgserver stop --data .local/test-pg >/dev/null 2>&1 || true; \
	  exit $$rc

## make e2e: docker-compose.yaml's topology as processes (Celery workers, Redis, password auth), a
## seeded month through it, a worker SIGKILLed mid-posting (tests/e2e; needs redis-server)
e2e: install
	@rc=0; $(BIN)/pytest -p no:cacheprovider -m e2e tests/e2e -s $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/python -m devtools.pgserver stop --data .local/e2e/pg >/dev/null 2>&1 || true; \
	  exit $$rc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

## make airflow: a local Airflow (UI on :8080) wired to the simulators and the ODS
airflow: install
	$(BIN)/python -m devtools.local_airflow

## make bench-check: every benchmark at a tiny scale as of the 1st, the 6th and the last day of a
## month (tests/devtools/test_bench_anyday.py, marker `bench`): the benchmarks work on any day
bench-check: install
	@rc=0; $(BIN)/pytest -p no:cacheprovider -m bench tests/devtools/test_bench_anyday.py $(PYTEST_ARGS) || rc=$$?; \
	  $(BIN)/python -m devtools.pgserver stop --data .local/test-pg >/dev/null 2>&1 || true; \
	  exit $$rc

## make bench: performance figures as JSON (the scaling check included), then a table of the
## targets; saves docs/bench/YYYY-MM-DD.json and .png (AS_OF=YYYY-MM-DD runs as of that date;
## default today; PEAK=1 adds the month-end peak)
bench: install
	@$(BIN)/python -m devtools.bench_all $(if $(AS_OF),--as-of $(AS_OF)) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET)) $(if $(PEAK),--peak)

## make bench-peak: the month-end peak alone (12,500 consultants, ~600k time entries + ~82k
## expenses: PSA extract -> last ERP confirmation <= 300 s, pipeline peak RSS <= 512 MB; ~10 min);
## saves docs/bench/YYYY-MM-DD-peak.json and .png. `make bench PEAK=1` adds it to the full run.
bench-peak: install
	@$(BIN)/python -m devtools.bench_all --only peak --suffix peak $(if $(AS_OF),--as-of $(AS_OF)) $(if $(PORT_OFFSET),--port-offset $(PORT_OFFSET))

## make bench-doc: the newest docs/bench/*.json's table (and every run's machine and load) into
## docs/performance.md, between its markers
bench-doc: install
	@$(BIN)/python -m devtools.bench_report

## make contracts: re-export the canonical JSON Schemas after a deliberate model change
contracts: install
	$(BIN)/python -m devtools.contracts_export

## make lock: requirements.in -> requirements.txt (runtime lock, what the image installs), then
## requirements-dev.in -> requirements-dev.txt on top of it (same pins); both with hashes. Pins
## already in a lock are kept unless `make lock LOCK_ARGS=--upgrade`.
LOCK_FLAGS := --python-version 3.11 --generate-hashes --no-header --annotation-style line $(LOCK_ARGS)
lock: install
	$(BIN)/uv pip compile requirements.in $(LOCK_FLAGS) -o requirements.txt
	$(BIN)/uv pip compile requirements-dev.in -c requirements.txt $(LOCK_FLAGS) -o requirements-dev.txt

## make deploy-check: what a deployment pipeline runs (runtime-only venv, import errors,
## reserialize, DAG policy, documented connections); docs/deploying.md
deploy-check: install
	$(BIN)/python -m devtools.deploy_check

clean:
	-$(BIN)/python -m devtools.pgserver stop --data .local/pg
	-$(BIN)/python -m devtools.pgserver stop --data .local/test-pg
	rm -rf .local .mypy_cache .ruff_cache
