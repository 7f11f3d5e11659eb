# The two set-up commands of the README. Both install what they need first (scripts/install.sh).
.PHONY: install quickstart test

install:
	./scripts/install.sh

quickstart: install
	.venv/bin/bench run suites/quickstart.yaml --report reports/quickstart.md

test:
	BENCH_EXTRAS=dev,models,torch ./scripts/install.sh
	.venv/bin/ruff check .
	.venv/bin/python -m pytest -q
