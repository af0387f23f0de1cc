# The two commands: `make run` and `make test`. Everything they need is set up on the way.
.PHONY: run test bench chaos lint install infra clean

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
BENCH ?=
CHAOS ?=

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

infra:
	bash scripts/infra.sh

run: install infra
	$(PY) -m devtools.run

test: install infra
	$(PY) -m pytest

bench: install infra
	$(PY) -m bench $(BENCH)

# The fault suite at full size (tests/chaos runs a short one in `make test`): on a private
# PostgreSQL and RabbitMQ it starts and restarts itself, never the shared servers.
chaos: install infra
	$(PY) -m devtools.chaos --recipients 20000 --accounts 4 $(CHAOS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services devtools

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache .mypy_cache
