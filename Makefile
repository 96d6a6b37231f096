# The verbs. `make run` and `make test` are the two commands the README promises.
SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
export UV_PYTHON_DOWNLOADS := never

.PHONY: setup run test browser-deps test-unit lint format artefacts bench chaos chaos-smoke deploy-check clean

setup:  ## install uv if missing, then the locked dependencies
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@$(UV) sync --locked --quiet

run: setup  ## the whole path on the bundled example, on the embedded default
	@$(UV) run blume-share run --example --until-idle

test: setup browser-deps  ## every test (integration tests need RabbitMQ and PostgreSQL: see README)
	$(UV) run pytest

browser-deps:  ## axe-core for the browser tests' accessibility checks (npm, pinned)
	cd tests/browser/axe && npm ci --no-audit --no-fund --loglevel=error

test-unit: setup  ## tests that need no external service
	$(UV) run pytest -m "not integration and not e2e"

lint: setup  ## ruff, ruff format, mypy strict, and the service boundary rule
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy
	$(UV) run pytest -q -p no:cacheprovider -p no:randomly tests/rules/test_import_rules.py

format: setup
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

artefacts: setup  ## regenerate JSON Schemas, the AsyncAPI document, the broker definitions and topology
	$(UV) run python -m blume_contracts.artefacts
	$(UV) run blume-share broker definitions > deploy/rabbitmq/definitions.json
	$(UV) run python -m deploy.tools.broker_topology

bench: setup  ## shares/s vs raw aio-pika, cost per share, p99 at half load, 10-min soak (each topology); the minimal design's CPU per share and the ceiling it sets; audit ingest vs raw COPY; revocation at the gateway; the image proxy vs Orthanc direct (needs RabbitMQ, PostgreSQL, Orthanc)
	$(UV) run python -m bench.throughput
	$(UV) run python -m bench.throughput --processes
	$(UV) run python -m bench.ceiling
	$(UV) run python -m bench.audit_ingest
	$(UV) run python -m bench.gateway_latency
	$(UV) run python -m bench.viewer_proxy

chaos: setup  ## fault-injection suite on its own RabbitMQ cluster, PostgreSQL and SMTP (CHAOS_ARGS=--help)
	$(UV) run python -m tests.faults.chaos $(CHAOS_ARGS)

chaos-smoke: setup  ## the same, short enough for CI
	$(UV) run python -m tests.faults.chaos --smoke $(CHAOS_ARGS)

deploy-check: setup  ## render and validate every Kubernetes overlay, run the manifest policy tests
	cd deploy/tests/crd-schemas && npm ci --no-audit --no-fund --loglevel=error
	@for overlay in dev production; do \
		$(UV) run kubectl kustomize deploy/k8s/overlays/$$overlay > /dev/null && echo "rendered $$overlay"; \
	done
	$(UV) run pytest -p no:cacheprovider deploy/tests -m "not integration"

clean:
	rm -rf .blume .pytest_cache .mypy_cache .ruff_cache
