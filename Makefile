# Developer entry points. `make test` is the command the README and CI use.
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp

.PHONY: venv run test conformance

venv: $(STAMP)

# Reinstall only when the pins or the packaging change.
$(STAMP): $(wildcard requirements*.txt) setup.py pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements-dev.txt
	$(VENV)/bin/pip install -e .
	touch $@

# The README quick start: basichandler in the background, condure in the foreground;
# the handler is killed by PID whichever way condure ends (it ignores SIGINT in background).
run: venv
	$(PY) examples/basichandler.py & handler=$$!; trap 'kill $$handler 2>/dev/null' EXIT; trap 'exit 130' INT TERM; $(PY) -m condure --listen 8000 --zclient-stream ipc://client

test: venv
	$(PY) -m pytest

conformance: venv
	../shared/conformance/run . $(PY) --pending .ci/conformance-pending
