# Every target keeps its Python environment in .venv/ at the repository root.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
DEMO_DB := demo.duckdb

.PHONY: demo test test-fast lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,spark,salesforce]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

# Import the bundled Sparkify sample into a fresh store, score it and list the top accounts.
demo: $(STAMP)
	rm -f $(DEMO_DB)
	$(BIN)/upsignal import --db $(DEMO_DB) --mapping examples/sparkify/mapping.yaml examples/sparkify/events.jsonl
	$(BIN)/upsignal score --db $(DEMO_DB) --model examples/sparkify/model.yaml --as-of 2018-11-15T00:00:00Z
	$(BIN)/upsignal accounts --db $(DEMO_DB) --limit 10

# The whole suite, slow tests included. pytest's exit code 5 (no test ran) is a failure.
test: $(STAMP)
	scripts/ensure-system-packages
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$status

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

clean:
	rm -rf $(VENV) $(DEMO_DB) .pytest_cache
