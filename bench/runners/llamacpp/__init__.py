"""llama.cpp through llama-cpp-python: spec.py (what bench knows of it), runner.py (the engine)."""
