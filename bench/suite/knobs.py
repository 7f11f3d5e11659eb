"""The knob registry: every backend knob declared once.

The suite schema (`knobs:` and per-device overrides), the matrix axes, the cell's load key and quality key,
the CSV columns and the report's headers and configuration names are all derived from `KNOBS`. Knobs every
backend takes are declared here; a backend's own knobs are declared in its spec (bench/runners/<name>/), and
the backend registry registers them when it loads, which the end of this module makes happen before any suite
is read or any row schema is built.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Knob:
    """One backend setting that can be swept as a matrix axis.

    default:  the value a suite that does not mention the knob measures with; a cell at the default leaves
              the knob out of its `cell_id`, so adding a knob keeps every existing id.
    backends: the backends that take it (None: all); other backends' cells carry None and are not multiplied.
    reload:   a change needs the model loaded again (part of the load key that groups cells in one worker).
    memory:   it changes the memory a cell needs (the planner and the report's "what fits" key on it).
    logits:   it can change the model's output, so quality is measured per value.
    per_device: a device entry in the suite may override it (a CPU column wants its own thread counts).
    cpu_value: the value forced on CPU devices (n_gpu_layers: nothing to offload).
    """

    name: str
    type: type
    default: Any
    help: str
    label: str  # table header in reports and plans
    prefix: str  # short tag in configuration names, e.g. "t" -> "t2"
    allowed: tuple[Any, ...] | None = None
    minimum: int | None = None
    backends: frozenset[str] | None = None
    reload: bool = False
    memory: bool = False
    logits: bool = False
    per_device: bool = False
    cpu_value: Any = None
    extra_words: tuple[str, ...] = ()  # words a suite may write besides the type's values ("all")
    parse: Callable[[Any], Any] | None = None  # suite value -> stored value
    show: Callable[[Any], str] | None = None  # stored value -> text for tables
    validate: Callable[[Any], str] | None = None  # stored value -> '' or what was expected (beyond its type)
    expand: Callable[[Any], tuple[Any, ...]] | None = None  # one suite value -> the matrix points it stands for

    def points(self, value: Any) -> tuple[Any, ...]:
        """The stored values one (parsed) suite value puts on the axis: itself, or several (a load sweep)."""
        return self.expand(value) if self.expand else (value,)

    def takes(self, backend: str) -> bool:
        return self.backends is None or backend in self.backends

    def parsed(self, value: Any) -> Any:
        return self.parse(value) if self.parse else value

    def text(self, value: Any) -> str:
        if value is None:
            return ""
        return self.show(value) if self.show else str(value)

    def check(self, value: Any) -> str:
        """'' if `value` (already parsed) is valid, else what was expected."""
        if self.allowed is not None and value not in self.allowed:
            return f"expected one of {', '.join(map(str, self.allowed))}"
        if self.type is bool and not isinstance(value, bool):
            return "expected true or false"
        if self.type is int and (isinstance(value, bool) or not isinstance(value, int)):
            words = f" or {', '.join(map(repr, self.extra_words))}" if self.extra_words else ""
            return f"expected an integer{words}"
        if self.type is int and self.minimum is not None and value < self.minimum and value != self.parsed("all"):
            return f"expected an integer >= {self.minimum}"
        if self.type is float and (isinstance(value, bool) or not isinstance(value, int | float)):
            return "expected a number"
        if self.type is str and not isinstance(value, str):
            return "expected text"
        return self.validate(value) if self.validate else ""


KNOBS: dict[str, Knob] = {}


def register(knob: Knob) -> Knob:
    """Add a knob to the registry (before any suite is read). Names are unique."""
    if knob.name in KNOBS:
        raise ValueError(f"knob {knob.name!r} is declared twice")
    KNOBS[knob.name] = knob
    return knob


def share(name: str, backend: str) -> Knob:
    """Let one more backend take a knob another backend declared (the same setting under the same name)."""
    knob = KNOBS[name]
    if knob.backends is not None and backend not in knob.backends:
        KNOBS[name] = replace(knob, backends=knob.backends | {backend})
    return KNOBS[name]


def unregister(name: str) -> None:
    """Remove a knob (tests that register one of their own)."""
    KNOBS.pop(name, None)


for _knob in (
    Knob(
        "threads",
        int,
        0,
        "CPU threads; 0 = every usable core (physical cores within this process's CPU affinity and cgroup quota)",
        "threads",
        "t",
        minimum=0,
        per_device=True,
    ),
    Knob(
        "parallel",
        int,
        1,
        "concurrent sequences decoded together (users served at once); the KV cache holds every sequence",
        "sequences",
        "np",
        minimum=1,
        memory=True,
    ),
):
    register(_knob)


def knobs_for(backend: str) -> list[Knob]:
    return [k for k in KNOBS.values() if k.takes(backend)]


def reload_knobs() -> tuple[str, ...]:
    return tuple(k.name for k in KNOBS.values() if k.reload)


def memory_knobs() -> tuple[str, ...]:
    return tuple(k.name for k in KNOBS.values() if k.memory)


def logits_knobs() -> tuple[str, ...]:
    return tuple(k.name for k in KNOBS.values() if k.logits)


def config_name(values: dict[str, Any], names: Iterable[str]) -> str:
    """A short name of a configuration from the knobs that vary, e.g. 't2 kvq8_0'."""
    parts = []
    for name in names:
        knob = KNOBS[name]
        value = values.get(name)
        if value is None or value == "":
            continue
        text = knob.text(value)
        if knob.type is bool:
            text = knob.prefix if value in (True, "True", "true") else f"no-{knob.prefix}"
            parts.append(text)
        else:
            parts.append(f"{knob.prefix}{text}")
    return " ".join(parts)


@dataclass(frozen=True)
class KnobValues:
    """A cell's knob settings in registry order (None where the cell's backend does not take the knob)."""

    items: tuple[tuple[str, Any], ...] = field(default=())

    def get(self, name: str) -> Any:
        for key, value in self.items:
            if key == name:
                return value
        return KNOBS[name].default if name in KNOBS else None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.items)


# Backends' own knobs: loading the backend registry registers them. By name, not by an import statement: the
# registry sits above this layer and imports it; this line only makes sure it has run.
importlib.import_module("bench.runners.registry")
