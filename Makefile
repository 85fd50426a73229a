VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# bench scale needs a PostgreSQL server (it makes a schema of its own and drops it).
BENCH_PG ?= postgresql+psycopg://postgres@127.0.0.1:5432/test

.PHONY: install run demo test bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/tgsentinel run

demo: $(STAMP)
	$(BIN)/tgsentinel replay tests/fixtures/mfa_channel_dump.txt --channel mfa --show

test: $(STAMP)
	$(BIN)/ruff check bot tests
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	# One worker per core (the suite mostly waits on databases and sockets); loadgroup keeps the browser
	# tests on one worker, with one Chromium.
	$(BIN)/pytest -q -n auto --dist loadgroup

# The issues' floors are for one core: taskset pins each benchmark to core 0.
bench: $(STAMP)
	taskset -c 0 $(BIN)/tgsentinel bench parse
	taskset -c 0 $(BIN)/tgsentinel bench replay
	taskset -c 0 $(BIN)/tgsentinel bench match
	taskset -c 0 $(BIN)/tgsentinel bench delivery
	taskset -c 0 $(BIN)/tgsentinel bench stories
	$(BIN)/tgsentinel bench dispatch --posts 100000
	taskset -c 0 $(BIN)/tgsentinel bench import       # minutes: a generated 200 MB export
	$(BIN)/tgsentinel bench soak                      # minutes: a real run over 20,000 new posts
	taskset -c 0 $(BIN)/tgsentinel bench ingest       # minutes: seeds 1M stored posts
	taskset -c 0 $(BIN)/tgsentinel bench retention    # minutes: prunes 1M old posts
	$(BIN)/tgsentinel bench search                    # tens of minutes: 1M posts; measures on one core
	$(BIN)/tgsentinel bench scale --db $(BENCH_PG)    # minutes: worker processes on PostgreSQL

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
