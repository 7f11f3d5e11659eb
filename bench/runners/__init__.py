"""Backends: each a package bench/runners/<name>/ (spec + engine) behind bench.runners.base's contract,
found through bench.runners.registry."""
