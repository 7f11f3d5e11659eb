"""PyTorch/transformers: spec.py, runner.py (the engine), probe.py (device capability), convert.py (GGUF)."""
