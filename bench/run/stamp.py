"""Every outcome stamped: a row that failed, timed out or was skipped gets `finished_utc` as an ok row does, so
the newest-row rule (bench.results.select) sees tonight's failure as newer than last week's success."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any


def utc_now() -> str:
    """The current instant as the CSV writes it (ISO 8601, UTC, whole seconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_finished_stamp(fields: dict[str, Any]) -> dict[str, Any]:
    """`fields` with `finished_utc` set to now where the outcome did not bring one (an ok row's comes from the
    worker when the cell ended)."""
    return fields if fields.get("finished_utc") else {**fields, "finished_utc": utc_now()}
