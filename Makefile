# One command per chore. `make demo` and `make test` set everything up themselves.
VENV ?= .venv
PY := $(VENV)/bin/python
RECALL := $(VENV)/bin/recall
DEMO_DIR ?= demo_data
USERS ?= 4000
ITEMS ?= 2000

.PHONY: setup test lint demo bench clean

$(VENV)/.installed: pyproject.toml scripts/setup.sh
	VENV=$(VENV) bash scripts/setup.sh

setup: $(VENV)/.installed

lint: setup
	$(PY) -m ruff check .

test: lint
	$(PY) -m pytest

demo: setup
	$(RECALL) data synth --out $(DEMO_DIR) --users $(USERS) --items $(ITEMS) --seed 0
	$(RECALL) data stats --events $(DEMO_DIR)/events.parquet --items $(DEMO_DIR)/items.parquet
	$(RECALL) evaluate --events $(DEMO_DIR)/events.parquet --items $(DEMO_DIR)/items.parquet \
		--protocol temporal --model popular,context-popular,oracle --world $(DEMO_DIR)/world.npz

bench: setup
	$(PY) bench/load.py
	$(PY) bench/baselines.py
	$(PY) bench/encoder.py
	$(PY) bench/index.py
	$(PY) bench/quality.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache .ruff_cache
