# The two set-up commands of the README: `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
OUT ?= outputs/demo

.PHONY: env demo test test-slow lint

env:
	@bash scripts/setup_env.sh

demo: env
	$(VENV)/bin/pela demo --output-dir $(OUT)

test: env
	$(VENV)/bin/python -m pytest -q -m "not slow"

test-slow: env
	$(VENV)/bin/python -m pytest -q -m slow

lint: env
	$(VENV)/bin/ruff check .
