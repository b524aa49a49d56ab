# Two commands do all the set-up on a fresh machine (see README.md):
#   make main   installs fgdepth, generates the built-in dataset (once), trains every loss
#               combination of the study at the `cpu` profile and prints the comparison
#   make test   installs fgdepth with its test dependencies and runs the test suite
.PHONY: install install-test main test lint bench-loader

PY ?= python3

install:
	$(PY) -m pip install -q -e .

install-test:
	$(PY) -m pip install -q -e ".[test]"

main: install
	$(PY) -m fgdepth study --profile cpu --out outputs/study

lint: install-test
	$(PY) -m ruff check fgdepth tests benchmarks

test: install-test lint
	$(PY) -m pytest -q

bench-loader: install
	$(PY) benchmarks/loader.py
