# The two commands of the README:
#   make demo   set up the virtualenv and run the main job end to end on generated data
#   make test   set up the virtualenv, lint, and run the test suite (what .ci/run calls)
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: setup system-deps demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# On churn.yaml and where it says (data/demo/, the MLflow store in mlruns/), so the other
# commands run with --config churn.yaml find the demo's data and models. A bare `churn demo`
# (after `pip install`, from any folder) writes everything under ./churn-demo/ instead.
demo: setup
	$(BIN)/churn demo --config churn.yaml

# Headless Chromium renders the retention report in the tests. Installed from Debian's packages
# when missing and we may (root); otherwise those tests skip and say why.
system-deps:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing chromium for the report tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "chromium could not be installed: the report rendering tests will skip" >&2; \
	fi

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# pytest exits 5 when it collected no test: that is a failure here, not a pass.
test: lint system-deps
	$(BIN)/pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) data .pytest_cache .ruff_cache
