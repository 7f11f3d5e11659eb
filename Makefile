# The two set-up commands of the README. Both install what they need first (scripts/install.sh).
.PHONY: install quickstart test

install:
	./scripts/install.sh

quickstart: install
	.venv/bin/bench run suites/quickstart.yaml --report reports/quickstart.md

test: install
	.venv/bin/python -m pytest -q
