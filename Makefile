# ocs: `make run` starts the daemon on the embedded default; `make test` runs every check.
# Both set up .venv (and the Debian packages the tests need) on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= config/ocs.demo.toml

.PHONY: native run test test-dates test-faults fuzz lint typecheck unit integration venv clean distclean

venv: $(STAMP)

$(STAMP): pyproject.toml scripts/bootstrap-venv.sh
	@PYTHON="$(PYTHON)" VENV="$(VENV)" scripts/bootstrap-venv.sh
	@touch $@

# The request hot paths compiled with mypyc (scripts/build_native.py): rebuilt when a listed
# module's source changed, a no-op otherwise. OCS_NATIVE=0 runs them interpreted.
native: $(STAMP)
	@$(BIN)/python scripts/build_native.py

run: native
	@scripts/install-run-deps.sh
	$(BIN)/ocsd --config $(CONFIG) --load-demo

test: native
	@scripts/install-test-deps.sh
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	@scripts/run-pytest.sh
	@echo "unit tests again with the hot paths interpreted (OCS_NATIVE=0)"
	@OCS_NATIVE=0 scripts/run-pytest.sh -q tests/unit
	@scripts/test-dates.sh

# The date-sensitive tests (marker `dates`) under faketime at month ends, DST changes, a leap
# day and the year end, each with another machine time zone (part of `make test`).
test-dates: native
	@scripts/install-test-deps.sh
	@scripts/test-dates.sh

# The fault tests with PostgreSQL away for 60 s (make test runs them with 10 s).
test-faults: native
	@scripts/install-test-deps.sh
	OCS_FAULT_OUTAGE_S=60 $(BIN)/pytest -s tests/integration/test_faults.py

# Coverage-guided fuzzing (atheris) of both receive paths: a million inputs each, from the
# committed seed corpus; prints inputs, exec/s, coverage and crashes (fuzz/run.py).
FUZZ_RUNS ?= 1000000
fuzz: $(STAMP)
	$(BIN)/python fuzz/run.py radius diameter --runs $(FUZZ_RUNS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: native
	$(BIN)/pytest tests/unit

integration: native
	$(BIN)/pytest tests/integration

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build src/*.egg-info
	find src -name '*.so' -delete
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the embedded database under var/ (stop `make run` first).
distclean: clean
	rm -rf $(VENV) var
