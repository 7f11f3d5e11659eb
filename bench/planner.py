"""Old home of the llama.cpp memory model, kept only because bench/report/context.py imports
`bench.planner.max_context_for_row` (a report without it silently drops its What-fits figures).

The model lives in bench/runners/llamacpp/ (shapes.py, memory.py, memory_plan.py); delete this module once the
report asks the backend registry instead.
"""
from bench.runners.llamacpp.memory import max_context_for_row

__all__ = ["max_context_for_row"]
