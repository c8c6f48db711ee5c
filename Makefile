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

# Dovecot for the IMAP tests comes from Debian's packages when it is missing (CI runs as root).
test: $(BIN)/.installed
	sh scripts/ensure-dovecot.sh
	$(BIN)/ruff check .
	MAILBOT_REQUIRE_DOVECOT=1 $(BIN)/python -m pytest -q

lint: $(BIN)/.installed
	$(BIN)/ruff check .

fuzz: $(BIN)/.installed
	MAILBOT_FUZZ_EXAMPLES=10000 $(BIN)/python -m pytest -q tests/test_fuzz.py

# Every figure of bench/README.md (the history and sweep stores are built once, then kept in /tmp).
bench: $(BIN)/.installed
	sh scripts/ensure-dovecot.sh
	$(BIN)/python bench/ingest.py --repeat 3
	$(BIN)/python bench/history.py --cache /tmp/mailbot-history --repeat 2
	$(BIN)/python bench/sweep.py --repeat 3 --cache /tmp/mailbot-sweep
	$(BIN)/python bench/sweep.py --repeat 2 --cache /tmp/mailbot-sweep --due 500
	$(BIN)/python bench/idle_latency.py
	$(BIN)/python bench/hostile.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
