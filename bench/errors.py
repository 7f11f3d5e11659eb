"""The one error type for user mistakes: printed as a message, never as a traceback."""

from __future__ import annotations


class BenchError(Exception):
    """A problem the user can fix: bad suite, bad file, missing model, bad argument.

    The message must say where (file, line, field) and what was expected.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message if hint is None else f"{message}\n  hint: {hint}")


class ModelUnavailable(BenchError):
    """A model file cannot be had on this machine: the cell is skipped, the run goes on."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message: libraries' messages can run to pages."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
