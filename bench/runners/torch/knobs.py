"""The torch backend's knobs (registered into bench.suite.knobs by the backend registry, for this backend only)."""

from __future__ import annotations

from typing import Any

from bench.suite.knobs import Knob


def _compile_mode(value: Any) -> Any:
    # Before compile modes were a knob it was a boolean: true meant torch.compile's default mode.
    if value in (True, "True", "true"):
        return "default"
    if value in (False, "False", "false"):
        return "off"
    return value


KNOBS: tuple[Knob, ...] = (
    Knob(
        "torch_compile",
        str,
        "off",
        "torch.compile mode: off | default | reduce-overhead | max-autotune | "
        "max-autotune-no-cudagraphs (a recompile during measured repetitions fails the cell)",
        "compile",
        "compile-",
        allowed=("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        reload=True,
        parse=_compile_mode,
    ),
    Knob(
        "static_cache",
        bool,
        False,
        "transformers' static KV cache instead of the dynamic one",
        "static cache",
        "static",
        reload=True,
        memory=True,
    ),
)
