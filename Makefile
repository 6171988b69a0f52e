# Everything the project needs is installed here, from pyproject.toml: CI and a
# fresh checkout run the same `make test`.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up down status demo test kafka smoke-tansu clients

# Reinstalls whenever pyproject.toml is newer than the stamp (e.g. a dependency changed).
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP) kafka
	$(VENV)/bin/anyam up $(ARGS)

# The newcomer's first command: start the embedded stack if needed, run the Nagrak programme,
# leave the stack running with the dashboard's address printed.
demo: $(STAMP) kafka
	$(VENV)/bin/anyam demo $(ARGS)

down: $(STAMP)
	$(VENV)/bin/anyam down $(ARGS)

status: $(STAMP)
	$(VENV)/bin/anyam status $(ARGS)

# Apache Kafka's broker jars (deploy/kafka/pom.xml), fetched with Maven the first time, offline after.
# Without Java 17+ it says so and the stack and tests use tansu instead.
kafka: $(STAMP)
	$(VENV)/bin/anyam fetch-kafka --optional

# The collaborator clients of docs/collaborators.md (Java 17+ with Maven, Node.js 20+ with npm). The tests
# build them themselves (tests/integration/test_clients.py), offline once Maven and npm have fetched them.
clients:
	cd clients/java && (mvn -B -q -o package || mvn -B -q package)
	cd clients/typescript && npm ci --prefer-offline --no-audit --no-fund && npm run --silent build

# pytest's own exit code (5 when nothing was collected) fails the target.
# The dashboard tests render the page in Debian's headless Chromium; the script installs it
# where it can (root with apt-get) and otherwise says how. The integration tests run on a
# three-node Apache Kafka cluster where Java is present (tests/conftest.py says which broker).
test: $(STAMP) kafka
	sh scripts/install-browser.sh
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# The pip-only broker keeps working: the demo, verify, one fault, and issue 25's forgeries on tansu.
SMOKE_TESTS := tests/integration/test_demo.py \
	tests/integration/test_audit.py::test_anyam_verify_on_an_untouched_programme_verifies_and_exits_zero \
	tests/integration/test_forgery.py \
	tests/integration/test_bounds.py::test_amounts_over_one_trillion_are_dead_lettered_and_every_read_run_and_audit_stays_honest \
	tests/integration/test_faults.py::test_broker_unreachable_for_30_seconds_commands_are_still_accepted_and_land_exactly_once
smoke-tansu: $(STAMP)
	ANYAM_STACK_ENGINE=tansu $(VENV)/bin/python -m pytest $(SMOKE_TESTS)
