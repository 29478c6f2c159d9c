# Two commands matter: `make demo` and `make test`. See README.md.
VENV ?= $(CURDIR)/.venv
BIN := $(VENV)/bin
PYTEST := $(BIN)/python -m pytest

.PHONY: bootstrap demo test lint sanity unit integration molecule bench build clean

bootstrap:
	@VENV=$(VENV) scripts/bootstrap.sh

demo: bootstrap
	$(BIN)/python scripts/demo.py

test: bootstrap
	@scripts/test.sh

lint: bootstrap
	VENV=$(VENV) scripts/lint.sh

sanity: bootstrap
	VENV=$(VENV) scripts/sanity.sh

unit: bootstrap
	$(PYTEST) tests/unit -q

integration: bootstrap
	$(PYTEST) tests/integration -q

molecule: bootstrap
	scripts/molecule.sh

build: bootstrap
	$(BIN)/ansible-galaxy collection build --force --output-path build/

clean:
	rm -rf build tests/output .pytest_cache
