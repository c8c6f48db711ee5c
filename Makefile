# Two commands a newcomer needs: `make demo` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint fuzz bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/mailbot demo

# Dovecot (IMAP tests), PostgreSQL (store tests) and Chromium (the report page) come from Debian's packages when missing (CI runs as root).
test: $(BIN)/.installed
	sh scripts/ensure-dovecot.sh
	sh scripts/ensure-postgres.sh
	sh scripts/ensure-chromium.sh
	$(BIN)/ruff check .
	MAILBOT_REQUIRE_DOVECOT=1 MAILBOT_REQUIRE_POSTGRES=1 MAILBOT_REQUIRE_CHROMIUM=1 $(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

fuzz: $(BIN)/.installed
	MAILBOT_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -q tests/test_fuzz.py

# Every figure of bench/README.md (the history and sweep stores are built once, then kept in /tmp).
bench: $(BIN)/.installed
	sh scripts/ensure-dovecot.sh
	sh scripts/ensure-postgres.sh
	$(BIN)/python bench/ingest.py --repeat 3
	$(BIN)/python bench/history.py --cache /tmp/mailbot-history --repeat 2
	$(BIN)/python bench/sweep.py --repeat 3 --cache /tmp/mailbot-sweep
	$(BIN)/python bench/sweep.py --repeat 2 --cache /tmp/mailbot-sweep --due 500
	$(BIN)/python bench/idle_latency.py
	$(BIN)/python bench/hostile.py
	$(BIN)/python bench/store_pg.py
	$(BIN)/python bench/history_pg.py --cache /tmp/mailbot-history
	$(BIN)/python bench/store_roundtrip.py --cache /tmp/mailbot-history

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
