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

bench: $(BIN)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/sweep.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
