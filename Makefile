# One command per chore. `make demo` and `make test` set everything up themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
RECALL := $(VENV)/bin/recall
DEMO_DIR ?= demo_data
# `make demo EVENTS=my/events.parquet ITEMS=my/items.parquet` runs the demo on your own data-contract files.
DEMO_INPUT := $(if $(EVENTS),--events $(EVENTS)) $(if $(ITEMS),--items $(ITEMS))

.PHONY: setup test test-fast lint demo bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest --durations=15

# Unit tests only: no redis-server, no uvicorn, no subprocess (the layers are markers, see pyproject.toml).
test-fast: setup
	$(PY) -m pytest -m "not integration and not e2e"

demo: setup
	$(RECALL) demo --data $(DEMO_DIR) $(DEMO_INPUT)

bench: setup
	$(PY) bench/load.py
	$(PY) bench/baselines.py
	$(PY) bench/encoder.py
	$(PY) bench/index.py
	$(PY) bench/quality.py
	$(PY) bench/service.py
	$(PY) bench/reliability.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
