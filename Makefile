# The two commands in the README do all the set-up on a fresh machine:
#   make test   create .venv if missing, install dawnet with its test extras, run the whole test suite
#   make bench  create .venv if missing, install dawnet, run the main job: the OCR benchmark (profile cpu)
# Both fetch the pinned handwriting fonts first (scripts/fetch-fonts: once into ~/.cache/dawnet/fonts, then offline).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q -c constraints.txt

.PHONY: test bench fonts os-packages lint clean

test: os-packages $(VENV)/.installed-test
	@DAWNET_PYTHON=$(PY) scripts/fetch-fonts
	$(PY) -m pytest

bench: os-packages $(VENV)/.installed-bench
	@DAWNET_PYTHON=$(PY) scripts/fetch-fonts
	$(VENV)/bin/dawnet bench

# The pinned handwriting fonts of the v2 data specs (fonts-lock.json) into the font cache; quick when cached.
fonts: $(VENV)/.installed-test
	@DAWNET_PYTHON=$(PY) scripts/fetch-fonts

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
