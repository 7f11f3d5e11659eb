"""Small helpers every hardware probe uses: probes never raise, and sensors speak bytes or str."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def attempt(fn: Callable[..., T], *args: Any) -> T | None:
    """Call a probe that may legitimately fail (feature not supported, no permission): None instead."""
    try:
        return fn(*args)
    except Exception:  # noqa: BLE001 - probes must never take a benchmark run down
        return None


def as_text(value: object) -> str:
    # Older pynvml and llama_cpp return bytes, newer return str.
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return "" if value is None else str(value)


def dist_version(name: str) -> str:
    # Reads package metadata only: importing torch just to learn its version costs seconds.
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def read_text(path: Path) -> str | None:
    """A sysfs/procfs file's content stripped, or None when it is absent or unreadable."""
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def read_int(path: Path) -> int | None:
    text = read_text(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None
