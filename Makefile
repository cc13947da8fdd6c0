# The two commands of the front door: `make run` and `make test`. Everything else is optional.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-tools fuzz lint typecheck openapi lock clean bench bench-deps soak

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q --require-hashes -r requirements.txt -r requirements-dev.txt
	touch $@

## run: the service on http://localhost:3007 (embedded PostgreSQL + demo data without DATABASE_URL)
run: $(VENV)/.installed
	$(PY) -m admin_service serve

## test: the whole suite against DATABASE_URL/TEST_DATABASE_URL, else an embedded PostgreSQL.
## First what the tests run besides Python (test-tools), so that none of them errors for a missing tool.
test: test-tools $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MAKE) -s typecheck
	$(PY) -m admin_service openapi export --check
	$(PY) .ci/pip_audit.py requirements.txt
	$(PY) -m pytest

## fuzz: schemathesis over the OpenAPI document against the service under gunicorn, with 300 examples per
## operation and mode (make test runs the same tests with 25); FUZZ_MAX_EXAMPLES overrides the count
fuzz: $(VENV)/.installed
	FUZZ_MAX_EXAMPLES=$${FUZZ_MAX_EXAMPLES:-300} $(PY) -m pytest -p no:cacheprovider tests/test_fuzz.py

# .ci/tools.sh installs Debian packages when root, else stops with one line saying what to install.
# nginx is in /usr/sbin, which a user's PATH may lack.
TOOLS := PATH="$$PATH:/usr/sbin:/sbin" $(SHELL) .ci/tools.sh

## test-tools: Debian's chromium (browser tests), node + npm (Socket.IO client tests, and their npm
## packages), wrk (bench smoke test), nginx (load-balancer test), redis-server (a Redis of the tests' own), rabbitmq-server (a broker the action fault tests stop and start), curl (the make run banner test)
test-tools:
	@$(TOOLS)

## bench: 1,000,000 jobs, the service under gunicorn, wrk and live clients; writes bench/results.json,
## bench/RESULTS.md, bench/latency.png. BENCH_DATABASE_URL=postgresql://.../bench uses that database
## (created when missing) instead of a fresh embedded PostgreSQL. BENCH_ARGS passes options to bench.run.
## JOBS=10000000 sets the dataset's size (make's own --jobs is its parallelism: not this). The comparison of
## another revision or deployment: BENCH_ARGS='--compare-rev REV' or '--compare-url URL --compare-token T'.
bench: $(VENV)/.installed bench-deps
	$(PY) -m bench.run $(if $(JOBS),--jobs $(JOBS)) $(BENCH_ARGS)

## soak: 10 minutes of mixed load (REST, 1,000 SSE streams, job changes) against two instances sharing
## Redis (127.0.0.1:6379, started when down); writes bench/SOAK.md and bench/soak.json, fails when a
## criterion does. SOAK_DATABASE_URL=postgresql://.../soak uses that database instead of a fresh embedded
## PostgreSQL; SOAK_ARGS passes options to bench.soak (e.g. SOAK_ARGS="--minutes 1 --streams 200").
soak: $(VENV)/.installed bench-deps
	$(PY) -m bench.soak $(SOAK_ARGS)

# What bench and soak need beyond the venv: wrk, Node (the stream clients) and bench/requirements.txt.
bench-deps: $(VENV)/.installed
	@$(TOOLS) wrk node npm
	$(PY) -m pip install -q -r bench/requirements.txt
	@test -d bench/node_modules/socket.io-client || (cd bench && npm ci --no-audit --no-fund --loglevel=error)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## typecheck: mypy over the package ([tool.mypy]), and --strict for the live pipeline, auth, roles and actions
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict --follow-imports=silent admin_service/live admin_service/auth.py admin_service/roles.py admin_service/actions

## openapi: regenerate openapi/openapi.json from the code
openapi: $(VENV)/.installed
	$(PY) -m admin_service openapi export

## lock: re-pin requirements*.txt (with hashes) from requirements*.in
lock: $(VENV)/.installed
	$(PY) -m pip install -q pip-tools
	$(VENV)/bin/pip-compile -q --strip-extras --generate-hashes -o requirements.txt requirements.in
	$(VENV)/bin/pip-compile -q --strip-extras --generate-hashes -o requirements-dev.txt requirements-dev.in

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache bench/node_modules tests/live/socketio/node/node_modules
