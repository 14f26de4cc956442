# Developer entry points. `make test` is the command the README and CI use.
SHELL := /bin/bash

VENV := .venv
PY := $(VENV)/bin/python
# The interpreter the venv is made from: the system's python3 when it is 3.11 or newer
# and can make a venv, else the first python3 on PATH. Distribution builds (Debian's,
# like the python:3.11 image the Dockerfile uses) are compiled with PGO and LTO; a plain
# source build (pyenv's default) runs condure's request path ~15-20% slower.
PYTHON ?= $(shell for p in /usr/bin/python3 python3; do "$$p" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1 && { echo "$$p"; exit; }; done; echo python3)
STAMP := $(VENV)/.stamp

.PHONY: venv run typecheck test conformance

venv: $(STAMP)

# Reinstall only when the pins or the packaging change.
$(STAMP): $(wildcard requirements*.txt) setup.py pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -r requirements-dev.txt
	$(VENV)/bin/pip install -e .
	touch $@

# The README quick start: basichandler in the background, condure in the foreground;
# the handler is killed by PID whichever way condure ends (it ignores SIGINT in background).
run: venv
	$(PY) examples/basichandler.py & handler=$$!; trap 'kill $$handler 2>/dev/null' EXIT; trap 'exit 130' INT TERM; $(PY) -m condure --listen 8000 --zclient-stream ipc://client

# mypy, configured in pyproject.toml ([tool.mypy]: strict for the pure modules).
typecheck: venv
	$(PY) -m mypy

test: typecheck
	$(PY) -m pytest

# The harness is not part of this repo: it lives in the project's shared folder
# beside the checkout (../shared); say so rather than fail with "Error 127".
HARNESS := ../shared/conformance/run
conformance: venv
	@if [ ! -x $(HARNESS) ]; then echo "make conformance: the conformance harness is not here ($(HARNESS) is missing); it comes with the project's shared folder, next to this checkout" >&2; exit 2; fi
	@# the recording is kept for .ci/conformance-d27: the scenarios pending for D27 alone,
	@# compared again without that one field, must all pass
	@results=$$(mktemp -d) && \
	TMPDIR=$$results CONFORMANCE_KEEP=1 $(HARNESS) . $(PY) --pending .ci/conformance-pending && \
	.ci/conformance-d27 $$results $(PY); rc=$$?; rm -rf $$results; exit $$rc
