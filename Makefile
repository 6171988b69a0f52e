# Everything the project needs is installed here, from pyproject.toml: CI and a
# fresh checkout run the same `make test`.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: up down status demo test

# Reinstalls whenever pyproject.toml is newer than the stamp (e.g. a dependency changed).
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

up: $(STAMP)
	$(VENV)/bin/anyam up $(ARGS)

# The newcomer's first command: start the embedded stack if needed, run the Nagrak programme,
# leave the stack running with the dashboard's address printed.
demo: $(STAMP)
	$(VENV)/bin/anyam demo $(ARGS)

down: $(STAMP)
	$(VENV)/bin/anyam down $(ARGS)

status: $(STAMP)
	$(VENV)/bin/anyam status $(ARGS)

# pytest's own exit code (5 when nothing was collected) fails the target.
# The dashboard tests render the page in Debian's headless Chromium; the script installs it
# where it can (root with apt-get) and otherwise says how.
test: $(STAMP)
	sh scripts/install-browser.sh
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)
