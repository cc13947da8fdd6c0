# The two commands of the front door: `make run` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint openapi lock clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.txt -r requirements-dev.txt
	touch $@

## run: the service on http://localhost:3007 (embedded PostgreSQL + demo data without DATABASE_URL)
run: $(VENV)/.installed
	$(PY) -m admin_service serve

## test: the whole suite against DATABASE_URL/TEST_DATABASE_URL, else an embedded PostgreSQL
test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m admin_service openapi export --check
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

## openapi: regenerate openapi/openapi.json from the code
openapi: $(VENV)/.installed
	$(PY) -m admin_service openapi export

## lock: re-pin requirements*.txt (with hashes) from requirements*.in
lock: $(VENV)/.installed
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --strip-extras --generate-hashes -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile -q --strip-extras --generate-hashes -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
