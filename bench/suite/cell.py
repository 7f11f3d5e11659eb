"""A cell: one point of the matrix, and its stable identity.

`cell_id` hashes what the cell measures — model, quantization, backend, device, workload shape and the knobs
that differ from their defaults — and never the suite's name, the repetition count or the warm-ups: renaming
a suite or measuring more repetitions keeps every id, and so does adding a knob (its default is left out).
The same function recomputes the id from a result row, so CSVs written by older versions still match.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr, model_validator

from bench.missing import is_missing
from bench.suite.knobs import KNOBS, config_name

# What a cell measures, besides its knobs (the workload shape and where it runs).
IDENTITY_FIELDS = (
    "model_id",
    "quantization",
    "backend",
    "device_id",
    "device_kind",
    "device_index",
    "prompt_tokens",
    "gen_tokens",
    "depth",
)
_INT_IDENTITY = {"device_index", "prompt_tokens", "gen_tokens", "depth"}
AXIS_TO_FIELD = {"model": "model_id", "device": "device_id"}


def normalise_knob(name: str, value: Any) -> Any:
    """A knob value as the registry types it, from a Cell, a CSV cell (text, float) or a YAML value."""
    if is_missing(value):
        return None
    knob = KNOBS[name]
    value = knob.parsed(value)
    if knob.type is bool:
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
    if knob.type is int:
        return int(float(value))
    if knob.type is float:
        return float(value)
    return str(value)


def cell_id_of(fields: Mapping[str, Any]) -> str:
    """The stable id of the cell whose fields (or result-row columns) these are."""
    identity: dict[str, Any] = {}
    for name in IDENTITY_FIELDS:
        value = fields.get(name)
        if is_missing(value):
            value = None
        elif name in _INT_IDENTITY:
            value = int(float(value))
        else:
            value = str(value)
        identity[name] = value
    for name, knob in KNOBS.items():
        value = normalise_knob(name, fields.get(name))
        if value is not None and value != knob.default:
            identity[name] = value
    payload = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:12]


class Cell(BaseModel):
    """One point of the matrix: what one result row measures. Knobs are attributes too (`cell.threads`):
    every registered knob is present, None where the cell's backend does not take it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    model_id: str
    quantization: str
    backend: str
    device_id: str
    device_kind: str
    device_index: int = 0
    prompt_tokens: int
    gen_tokens: int
    depth: int = 0
    repetitions: int = 5
    warmup: int = 1
    sustain_s: float = 0  # sustained mode (bench.runners.sustain); not part of the identity, like repetitions
    sustain_window_s: float = 10
    suite: str = ""  # where the cell came from; not part of its identity
    _id: str = PrivateAttr(default="")

    @model_validator(mode="before")
    @classmethod
    def _all_knobs(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        unknown = [k for k in data if k not in cls.model_fields and k not in KNOBS]
        if unknown:
            raise ValueError(f"unknown cell field(s) {unknown}; knobs: {', '.join(KNOBS)}")
        backend = str(data.get("backend", ""))
        on_cpu = data.get("device_kind") == "cpu"
        filled = dict(data)
        for name, knob in KNOBS.items():
            if name not in filled:
                if not knob.takes(backend):
                    filled[name] = None
                else:
                    filled[name] = knob.cpu_value if on_cpu and knob.cpu_value is not None else knob.default
            else:
                filled[name] = normalise_knob(name, filled[name])
        return filled

    def model_post_init(self, context: Any) -> None:
        self._id = cell_id_of(self.fields())

    @property
    def cell_id(self) -> str:
        return self._id

    def knob(self, name: str) -> Any:
        return (self.__pydantic_extra__ or {}).get(name, None)

    def setting(self, name: str) -> Any:
        """The knob's value, or the registry's default where the cell carries none (e.g. a row's blank)."""
        value = self.knob(name)
        return KNOBS[name].default if value is None else value

    def knobs(self) -> dict[str, Any]:
        return {name: self.knob(name) for name in KNOBS}

    def fields(self) -> dict[str, Any]:
        """Every field and knob, by column name (the CSV's identity columns)."""
        return self.model_dump()

    @property
    def label(self) -> str:
        # The per-device knobs (threads, GPU layers) name a cell (one forced on CPU says nothing there), and so
        # does any other knob away from its default: 4 sequences, a load point, a KV type.
        values = self.knobs()
        varying = [
            n
            for n, k in KNOBS.items()
            if (k.per_device and (k.cpu_value is None or self.device_kind != "cpu"))
            or (not k.per_device and values.get(n) not in (None, "", k.default))
        ]
        config = config_name(values, varying)
        return (
            f"{self.model_id} {self.quantization} {self.backend}/{self.device_id} {config} "
            f"pp{self.prompt_tokens} tg{self.gen_tokens} @d{self.depth}"
        )

    def axis_value(self, axis: str) -> Any:
        return getattr(self, AXIS_TO_FIELD.get(axis, axis))

    def load_key(self) -> tuple[Any, ...]:
        """Cells sharing this key can share one loaded model in one worker."""
        return (
            self.model_id,
            self.quantization,
            self.backend,
            self.device_id,
            *(self.knob(k.name) for k in KNOBS.values() if k.reload),
        )

    def quality_key(self) -> tuple[Any, ...]:
        """Cells sharing this key give the same logits: quality is measured once per key."""
        return (
            self.model_id,
            self.quantization,
            self.backend,
            self.device_kind,
            *(self.knob(k.name) for k in KNOBS.values() if k.logits),
        )

    def with_values(self, **update: Any) -> Cell:
        """A copy with some fields or knobs changed (validated again, so the id follows)."""
        return Cell.model_validate({**self.fields(), **update})
