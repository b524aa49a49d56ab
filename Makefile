# Two commands do all the set-up on a fresh machine (see README.md):
#   make test   installs fgdepth with its test dependencies and runs the test suite
.PHONY: install test lint bench-loader

PY ?= python3

install:
	$(PY) -m pip install -q -e ".[test]"

lint:
	$(PY) -m ruff check fgdepth tests benchmarks

test: install lint
	$(PY) -m pytest -q

bench-loader: install
	$(PY) benchmarks/loader.py
