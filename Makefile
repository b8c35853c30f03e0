# rumor: `make test` sets everything up on a fresh clone (only python3 needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: all install test lint proto demo clean

all: test

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests tools
	$(VENV)/bin/ruff format --check src tests tools

test: $(STAMP)
	$(VENV)/bin/ruff check src tests tools
	$(PY) -m pytest

proto: $(STAMP)
	$(PY) tools/genproto.py

demo: $(STAMP)
	@echo "The live demo network arrives with the operator-experience work; see README.md for what runs today."
	$(VENV)/bin/rumor --help

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache
