# Two commands: `make demo` (main job on built-in synthetic data) and `make test`.
# Both create .venv when it is missing and install the project into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# SLOW=1 (what .ci/run uses) also runs the end-to-end tests marked slow (about 9 more minutes on 2 cores)
SLOW ?=

.PHONY: install test demo clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): setup.py | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q $(if $(SLOW),,-m "not slow") $(PYTEST_ARGS) tests

demo: $(STAMP)
	$(BIN)/ssfl-recon demo $(if $(PRETRAINED),--pretrained,) $(DEMO_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
