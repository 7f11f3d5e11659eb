"""Suites: YAML -> schema -> knob registry checks -> the matrix of cells.

knobs.py   every backend knob, declared once
schema.py  what a suite file may say (pydantic)
load.py    reading a file, errors with file, line and field
cell.py    one point of the matrix and its stable cell_id
matrix.py  expansion, include/exclude
"""

from __future__ import annotations

from bench.suite.cell import Cell, cell_id_of
from bench.suite.knobs import KNOBS, Knob
from bench.suite.load import axes, load_suite, parse_suite
from bench.suite.matrix import expand, matches
from bench.suite.schema import (
    GB,
    SLO_PRESETS,
    SOURCE_QUANT,
    SYNTHETIC_PREFIX,
    Constraints,
    DeviceCost,
    DeviceSpec,
    Limits,
    ModelSpec,
    QualitySpec,
    Slo,
    Suite,
    SyntheticConfig,
    Workload,
)

__all__ = [
    "GB",
    "KNOBS",
    "SOURCE_QUANT",
    "SYNTHETIC_PREFIX",
    "Cell",
    "Constraints",
    "DeviceCost",
    "DeviceSpec",
    "Knob",
    "Limits",
    "ModelSpec",
    "QualitySpec",
    "SLO_PRESETS",
    "Slo",
    "Suite",
    "SyntheticConfig",
    "Workload",
    "axes",
    "cell_id_of",
    "expand",
    "load_suite",
    "matches",
    "parse_suite",
]
