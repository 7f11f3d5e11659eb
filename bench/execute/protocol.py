"""The messages between the parent and a worker process: one job in (JSON on stdin), typed events out
(JSON lines on a private copy of stdout). Measurement and quality jobs share it."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, TypeAdapter


class MeasureJob(BaseModel):
    """Load one model, then measure these cells (they share its load key)."""

    kind: Literal["measure"] = "measure"
    backend: str
    model_path: str
    cells: list[dict[str, Any]]


class QualityJob(BaseModel):
    """Load one model and measure its quality on one cell's settings (bench.quality)."""

    kind: Literal["quality"] = "quality"
    backend: str
    model_path: str
    cell: dict[str, Any]
    quality: dict[str, Any]


Job = Annotated[MeasureJob | QualityJob, Field(discriminator="kind")]
JOB = TypeAdapter(Job)


class Loaded(BaseModel):
    event: Literal["loaded"] = "loaded"
    load_s: float
    fields: dict[str, Any] = Field(default_factory=dict)  # row columns the load gave (n_params, arch, ...)


class LoadError(BaseModel):
    event: Literal["load_error"] = "load_error"
    reason: str
    detail: str = ""


class CellStart(BaseModel):
    event: Literal["cell_start"] = "cell_start"
    cell_id: str
    started_utc: str


class CellDone(BaseModel):
    event: Literal["cell_done"] = "cell_done"
    cell_id: str
    finished_utc: str
    fields: dict[str, Any]


class CellError(BaseModel):
    event: Literal["cell_error"] = "cell_error"
    cell_id: str
    reason: str
    detail: str = ""


class QualityDone(BaseModel):
    event: Literal["quality_done"] = "quality_done"
    fields: dict[str, Any]


class QualityError(BaseModel):
    event: Literal["quality_error"] = "quality_error"
    reason: str
    detail: str = ""


Event = Annotated[
    Loaded | LoadError | CellStart | CellDone | CellError | QualityDone | QualityError, Field(discriminator="event")
]
EVENT = TypeAdapter(Event)


def encode(message: BaseModel) -> str:
    return json.dumps(message.model_dump(), default=str) + "\n"


def decode_event(line: str) -> Any:
    """The event on one line; None for a line that is not one (a library printing to the wrong stream)."""
    try:
        return EVENT.validate_json(line)
    except ValueError:
        return None
