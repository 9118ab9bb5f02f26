# The two commands in the README do all the set-up on a fresh machine:
#   make test   create .venv if missing, install dawnet with its test extras, run the whole test suite
#   make bench  create .venv if missing, install dawnet, run the main job: the OCR benchmark (profile cpu)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

.PHONY: test bench os-packages lint clean

test: os-packages $(VENV)/.installed-test
	$(PY) -m pytest

bench: os-packages $(VENV)/.installed-bench
	$(VENV)/bin/dawnet bench

lint: $(VENV)/.installed-test
	$(VENV)/bin/ruff check .

os-packages:
	@scripts/install-os-packages.sh

$(PY):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "dawnet needs Python >= 3.10; run make PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[test]'
	@touch $@

$(VENV)/.installed-bench: pyproject.toml constraints.txt | $(PY)
	$(PIP) -e '.[bench]'
	@touch $@

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
