# Two commands do all the set-up on a fresh machine (see README.md):
#   make main   installs fgdepth, generates the built-in dataset (once), trains every experiment
#               of the study at the `cpu` profile (the loss combinations, the default and the
#               original network's two systems), each for the same minutes of training, and
#               prints the comparison and how long it took
#   make test   installs fgdepth with its test dependencies (and, as root, the PostgreSQL server
#               the study-storage tests start) and runs the test suite
#   make test-fast  the suite less its slow end-to-end tests: a few minutes, for a change's
#               inner loop (after one `make install-test`)
.PHONY: install install-test services main test test-fast lint bench-loader

PY ?= python3

install:
	$(PY) -m pip install -q -e .

install-test:
	$(PY) -m pip install -q -e ".[test]"

main: install
	$(PY) -m fgdepth study --profile cpu --out outputs/study

lint: install-test
	$(PY) -m ruff check fgdepth tests benchmarks docs

# Debian/Ubuntu packages the tests start servers and a browser from: PostgreSQL (study storage)
# and Chromium with its driver (the MLflow UI test). Without root, their tests are skipped.
SERVICES_MISSING = $(shell ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || echo postgresql; \
	[ -x /usr/bin/chromium ] || echo chromium; [ -x /usr/bin/chromedriver ] || echo chromium-driver)
services:
	@if [ -z "$(strip $(SERVICES_MISSING))" ]; then :; \
	elif [ "$$(id -u)" = 0 ]; then \
		echo "installing $(strip $(SERVICES_MISSING)) (apt-get)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends $(SERVICES_MISSING) >/dev/null; \
	else echo "not installed: $(strip $(SERVICES_MISSING)); their tests will be skipped"; fi

# the suite in TEST_WORKERS processes (pytest-xdist): most tests wait on the subprocesses and
# servers they start, so two workers use two cores; TEST_WORKERS=0 runs it in this process
TEST_WORKERS ?= 2
test: install-test services lint
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist worksteal

# the tests not marked slow: no training process, server, browser or PostgreSQL of their own
test-fast:
	$(PY) -m pytest -q -m "not slow" -n $(TEST_WORKERS) --dist worksteal

bench-loader: install
	$(PY) benchmarks/loader.py
